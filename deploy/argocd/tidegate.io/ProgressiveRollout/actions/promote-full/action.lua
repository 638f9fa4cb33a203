-- promote-full: skip the remaining steps and analysis and promote the new version now.
-- The annotation's value names who asked; the operator removes it once it has acted.
obj.metadata = obj.metadata or {}
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tidegate.io/promote-full"] = "argocd"
return obj
