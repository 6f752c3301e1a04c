"""The ComfyUI backend: a client per server, workflows with parameter maps, and the pool."""

from core.backends.comfyui.pool import ComfyUIPool
from core.backends.comfyui.workflows import Workflow, WorkflowError, WorkflowLibrary

__all__ = ["ComfyUIPool", "Workflow", "WorkflowError", "WorkflowLibrary"]
