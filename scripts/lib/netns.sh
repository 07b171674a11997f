# shellcheck shell=bash
# Network namespaces for the benchmark and load-test scripts: one helper,
# sourced, so every script makes, joins and removes them alike (the tests'
# twin is tests/common's Netns).
#
#   ns_add NAME [noipv6]           a namespace with its loopback up (IPv6 off:
#                                  nothing but the script's frames crosses it)
#   ns_veth NS_A IF_A NS_B IF_B    a veth pair between two namespaces (or
#                                  inside one), both ends up
#   ns_del NAME                    remove one now (a fresh one per row)
#   ns_cleanup                     remove every namespace ns_add made; call it
#                                  from the script's EXIT trap
_ns_made=()

ns_add() {
  ip netns del "$1" 2>/dev/null || true
  ip netns add "$1"
  _ns_made+=("$1")
  ip -n "$1" link set lo up
  if [ "${2:-}" = noipv6 ]; then
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  fi
}

ns_veth() {
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

ns_del() {
  ip netns del "$1" 2>/dev/null || true
}

ns_cleanup() {
  local n
  for n in ${_ns_made[@]+"${_ns_made[@]}"}; do
    ip netns del "$n" 2>/dev/null || true
  done
}
