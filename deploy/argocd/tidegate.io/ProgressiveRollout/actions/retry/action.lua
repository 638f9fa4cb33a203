-- retry: run the failed or aborted revision again from its first step.
-- The annotation's value names who asked; the operator removes it once it has acted.
obj.metadata = obj.metadata or {}
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tidegate.io/retry"] = "argocd"
return obj
