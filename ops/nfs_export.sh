#!/usr/bin/env bash
# Export /shared over NFS to this cluster's own network only (run on the head by cluster.yaml).
#
#   ops/nfs_export.sh            write the /shared line of /etc/exports (replacing an earlier one), re-export
#   ops/nfs_export.sh --print    print the line only (what the test checks)
#
# The network: on EC2 the VPC's CIDR (instance metadata, IMDSv2): workers start in any zone of the VPC, each
# zone its own subnet, and nothing outside the VPC can reach the head's NFS port. Elsewhere (a local cluster of
# network namespaces, ops/local_cluster.py) the network of the interface that carries the default route.
set -euo pipefail
dir="${SHARED:-/shared}"
net=""
if token=$(curl -sf -m 2 -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' 2>/dev/null); then
  md() { curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"; }
  mac=$(md mac) && net=$(md "network/interfaces/macs/$mac/vpc-ipv4-cidr-block") || net=""
fi
if [[ -z "$net" ]]; then
  dev=$(ip route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  addr=$(ip -o -f inet addr show ${dev:+dev "$dev"} scope global | awk '{print $4; exit}')
  [[ -n "$addr" ]] || { echo "nfs_export.sh: no global IPv4 address to derive the cluster network from" >&2; exit 2; }
  net=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)' "$addr")
fi
case "$net" in
  0.0.0.0/*|*/0) echo "nfs_export.sh: refusing to export $dir to $net" >&2; exit 2 ;;
esac
line="$dir $net(rw,sync,no_subtree_check)"
if [[ "${1:-}" == "--print" ]]; then
  echo "$line"
  exit 0
fi
{ grep -v "^$dir " /etc/exports 2>/dev/null || true; echo "$line"; } | sudo tee /etc/exports.asc-dist > /dev/null
sudo mv /etc/exports.asc-dist /etc/exports
sudo exportfs -ra
echo "exported $dir to $net"
