# agent-node.sh AGENT_DIR
# The node program the installed version in AGENT_DIR runs with (recorded in its .complete).
sed -n 's/^node=//p' "$1/.complete"
