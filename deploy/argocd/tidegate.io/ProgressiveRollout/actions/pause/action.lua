-- pause: stop the rollout where it is (spec.paused); nothing moves until it is resumed.
obj.spec.paused = true
return obj
