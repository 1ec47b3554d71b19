"""llmfleet: a Kubernetes operator for LLM serving fleets.

One ``LLMService`` object becomes model-server Deployments, an NGINX or HAProxy load balancer,
a Redis response cache behind a caching gateway, and an HPA whose floor a predictive scaler
raises ahead of load.
"""

__version__ = "0.1.0"
GROUP = "llmfleet.io"
VERSION = "v1alpha1"
KIND = "LLMService"
PLURAL = "llmservices"
FIELD_MANAGER = "llmfleet"
