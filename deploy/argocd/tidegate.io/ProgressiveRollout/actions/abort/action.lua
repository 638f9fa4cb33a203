-- abort: roll back now (all traffic to the stable version, phase Aborted).
-- The annotation's value names who asked; the operator removes it once it has acted.
obj.metadata = obj.metadata or {}
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tidegate.io/abort"] = "argocd"
return obj
