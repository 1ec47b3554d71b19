"""Pure renderers: a validated spec (plus observed endpoints) in, every child manifest out.

Nothing here talks to a cluster. ``render_children`` is what ``llmfleet render`` prints and what
the operator's reconcile applies, so the two can never disagree. The order is the apply order:
configuration before the workloads that mount it, Services before the clients that call them.
"""

from __future__ import annotations

from llmfleet.api import LLMServiceSpec
from llmfleet.render import cache, lb, model
from llmfleet.render.common import Endpoint, Manifest, RenderContext

__all__ = ["Endpoint", "Manifest", "RenderContext", "child_key", "render_children"]


def render_children(spec: LLMServiceSpec, ctx: RenderContext) -> list[Manifest]:
    children: list[Manifest | None] = [
        model.model_cache_claim(spec, ctx),
        model.model_service(spec, ctx),
        model.model_deployment(spec, ctx),
        model.model_pdb(spec, ctx),
        model.model_hpa(spec, ctx),
        lb.lb_configmap(spec, ctx),
        lb.lb_deployment(spec, ctx),
    ]
    if spec.cache.enabled:
        children += [
            cache.redis_configmap(spec, ctx),
            cache.redis_service(ctx),
            cache.redis_deployment(spec, ctx),
            lb.service(ctx, lb.lb_name(ctx), "lb", str(spec.load_balancer.engine), "lb"),
            cache.gateway_deployment(spec, ctx),
            *cache.network_policies(ctx),
        ]
    public_target = "gateway" if spec.cache.enabled else "lb"
    children.append(
        lb.service(ctx, ctx.name, "endpoint", "llmfleet", public_target, spec.load_balancer.service_type)
    )
    return [child for child in children if child is not None]


def child_key(manifest: Manifest) -> tuple[str, str, str]:
    """(apiVersion, kind, name): how the reconcile matches desired and observed children."""
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]
