-- promote: end the current pause (a `pause: {}` step, a blue/green preview).
-- The annotation's value names who asked; the operator removes it once it has acted.
obj.metadata = obj.metadata or {}
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tidegate.io/promote"] = "argocd"
return obj
