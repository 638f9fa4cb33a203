-- resume: clear spec.paused; the rollout carries on from the step it was paused at.
obj.spec.paused = false
return obj
