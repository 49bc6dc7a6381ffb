# lock-refresh.sh OWNER
# Touches the deploy lock while OWNER holds it; says "lost" when another deployer broke it.
L="$R/deploy.lock"
if [ "$(cat "$L/owner" 2>/dev/null)" = "$1" ]; then touch "$L/owner"; else echo lost; fi
