# The sweep, network and sound half. See sweep_lib.sh for a row.
. /scripts/sweep_lib.sh

# ifstat IFACE COUNTER: one of the interface's statistics.
ifstat() { cat /sys/class/net/$1/statistics/$2; }

# dad_reply IFACE IP: an ARP probe for IP sent out of IFACE is answered.
# A probe (source 0.0.0.0) rather than a request, because the kernel drops
# a request whose source address is one of its own, and both ends of every
# link here are in this one namespace. arping -D exits 1 on a reply.
dad_reply() { ! arping -D -c 2 -w 3 -I $1 $2 >/dev/null; }

# Traffic out of a dummy device: the ARP for a neighbour that is not there.
describe ex_dummy "a dummy device with an address; an ARP request for an absent neighbour leaves through it (tx counted)"
ex_dummy() {
	local ok=1
	ip link add hpdum0 type dummy && ip addr add 10.9.0.1/24 dev hpdum0 && ip link set hpdum0 up || return 1
	ping -c 1 -W 1 10.9.0.2 >/dev/null
	[ "$(ifstat hpdum0 tx_packets)" -gt 0 ] || ok=0
	ip link del hpdum0 || ok=0
	[ $ok = 1 ]
}

# veth PREFIX: a pair PREFIX0/PREFIX1, both up. busybox's ip ignores
# `peer name`, so the kernel names the peer: find it by index, rename it.
veth() {
	local peer i
	ip link add ${1}0 type veth || return 1
	i=$(cat /sys/class/net/${1}0/iflink)
	for peer in /sys/class/net/*; do [ "$(cat $peer/ifindex)" = $i ] && break; done
	ip link set dev ${peer##*/} name ${1}1 && ip link set ${1}0 up && ip link set ${1}1 up
}

describe ex_veth "a veth pair; an ARP probe sent from one end is answered by the other"
ex_veth() {
	local ok=1
	veth hpve && ip addr add 10.9.1.1/24 dev hpve0 || return 1
	dad_reply hpve1 10.9.1.1 || ok=0
	[ "$(ifstat hpve0 rx_packets)" -gt 0 ] || ok=0
	ip link del hpve0 || ok=0
	[ $ok = 1 ]
}

# A bridge with one veth end as its port: the probe crosses the bridge,
# which learns the sender and answers for its own address.
describe ex_bridge "a bridge (brctl) with a veth end as port; an ARP probe from the other end is answered by the bridge, which learns the sender"
ex_bridge() {
	local ok=1
	veth hpbv || return 1
	brctl addbr hpbr0 && brctl addif hpbr0 hpbv0 && ip addr add 10.9.2.1/24 dev hpbr0 && ip link set hpbr0 up || ok=0
	dad_reply hpbv1 10.9.2.1 || ok=0
	# busybox's brctl has no showmacs: brforward holds the same table as
	# 16-byte records that begin with the MAC.
	xxd -p -c 16 /sys/class/net/hpbr0/brforward | grep -q "^$(tr -d : < /sys/class/net/hpbv1/address)" || ok=0
	ip link set hpbr0 down; brctl delbr hpbr0 || ok=0
	ip link del hpbv0 || ok=0
	[ $ok = 1 ]
}

# llc opens its SAP when stp gets its first user and closes it with the
# last: reloading bridge makes it do both.
describe ex_llc "bridge unloaded and loaded again (stp gives up and reopens its llc SAP), then ex_bridge"
ex_llc() { rmmod bridge && insmod /modules/bridge.ko && ex_bridge $1; }

# VLAN 5 on both ends of a veth pair; the probe is tagged and untagged.
describe ex_vlan "VLAN 5 on both ends of a veth pair; an ARP probe crosses tagged and is answered"
ex_vlan() {
	local ok=1
	veth hpvv || return 1
	ip link add link hpvv0 name hpvv0.5 type vlan id 5 && ip link add link hpvv1 name hpvv1.5 type vlan id 5 || ok=0
	ip addr add 10.9.3.1/24 dev hpvv0.5 && ip link set hpvv0.5 up && ip link set hpvv1.5 up || ok=0
	dad_reply hpvv1.5 10.9.3.1 || ok=0
	ip link del hpvv0.5; ip link del hpvv1.5; ip link del hpvv0 || ok=0
	[ $ok = 1 ]
}

describe ex_macvlan "a macvlan (bridge mode) on a veth end with an address; an ARP probe from the other end is answered"
ex_macvlan() {
	local ok=1
	veth hpmv || return 1
	ip link add link hpmv0 name hpmvl type macvlan mode bridge && ip addr add 10.9.4.1/24 dev hpmvl && ip link set hpmvl up || ok=0
	dad_reply hpmv1 10.9.4.1 || ok=0
	ip link del hpmvl || ok=0
	ip link del hpmv0 || ok=0
	[ $ok = 1 ]
}

# A persistent tap: created through /dev/net/tun, given traffic nobody
# reads (tun drops it and counts it), deleted.
describe ex_tun "a persistent tap made with tunctl through /dev/net/tun, traffic sent to it (dropped, counted), deleted"
ex_tun() {
	local ok=1
	tunctl -t hptap0 >/dev/null && ip addr add 10.9.5.1/24 dev hptap0 && ip link set hptap0 up || return 1
	ping -c 1 -W 1 10.9.5.2 >/dev/null
	[ "$(ifstat hptap0 tx_dropped)" -gt 0 ] || ok=0
	tunctl -d hptap0 >/dev/null || ok=0
	[ $ok = 1 ]
}

# A table, an input chain and a counter rule (nft_tiny, built on the host),
# traffic through it, and the table deleted.
describe ex_nft "nft_tiny: one netlink batch makes a table, an input base chain and a counter rule; pings through it; a second batch deletes the table"
ex_nft() {
	local ok=1
	/bin/nft_tiny add hp_$1 || return 1
	ping -c 2 -W 1 127.0.0.1 >/dev/null || ok=0
	/bin/nft_tiny del hp_$1 || ok=0
	[ $ok = 1 ]
}

# card_of ID: the number of the sound card with that id.
card_of() { awk -v id="$1" '$2 == "[" id || $2 == "[" id "]:" { print $1; exit }' /proc/asound/cards; }

# pcm_open CARD DEVICE p|c: opens the PCM and checks that the driver has it
# open (its hw_params file says "closed" otherwise).
pcm_open() {
	local node=/dev/snd/pcmC$1D$2$3 state ok=1
	if [ $3 = p ]; then exec 3>$node || return 1; else exec 3<$node || return 1; fi
	state=$(cat /proc/asound/card$1/pcm$2$3/sub0/hw_params)
	exec 3>&-
	[ "$state" = "no setup" ] || ok=0
	[ "$(cat /proc/asound/card$1/pcm$2$3/sub0/hw_params)" = closed ] || ok=0
	[ $ok = 1 ]
}

describe ex_dummy_pcm "the Dummy card playback and capture PCMs opened, the driver seen holding them (hw_params: no setup), closed"
ex_dummy_pcm() { local c=$(card_of Dummy); [ -n "$c" ] && pcm_open $c 0 p && pcm_open $c 0 c; }
describe ex_timer "/dev/snd/timer opened and closed, then ex_dummy_pcm"
ex_timer() { exec 3</dev/snd/timer || return 1; exec 3<&-; ex_dummy_pcm; }
describe ex_control "the Dummy card /proc/asound id read and its control device opened and closed"
ex_control() {
	local c=$(card_of Dummy)
	[ -n "$c" ] && grep -q Dummy /proc/asound/card$c/id || return 1
	exec 3</dev/snd/controlC$c || return 1
	exec 3<&-
}
# soundcore only registers OSS device nodes: loading the OSS mixer makes
# one for the card, which must open, and unloading removes it.
describe ex_oss "snd-mixer-oss loaded (an OSS /dev/mixer for the card), /dev/mixer opened, unloaded (the node goes)"
ex_oss() {
	local ok=1
	load snd-mixer-oss || return 1
	exec 3</dev/mixer || ok=0
	exec 3<&-
	rmmod snd_mixer_oss || ok=0
	[ ! -e /dev/mixer ] || ok=0
	[ $ok = 1 ]
}
describe ex_aloop "the Loopback card playback PCM 0 and capture PCM 1 opened, the driver seen holding them, closed"
ex_aloop() { local c=$(card_of Loopback); [ -n "$c" ] && pcm_open $c 0 p && pcm_open $c 1 c; }

ip link set lo up

load dummy
row dummy ex_dummy "refused:its packets and counters are handled by the core"
load veth
row veth ex_veth hits

load bridge
row bridge ex_bridge hits
row stp ex_bridge "refused:it only registers protocols with llc"
row llc ex_llc hits
unload bridge stp llc

load 8021q
row 8021q ex_vlan hits
unload 8021q garp mrp stp llc

load macvlan
row macvlan ex_macvlan hits
unload macvlan

load tun
row tun ex_tun hits
unload tun

# libcrc32c (6.x) asks the crypto API for crc32c when it loads: nf_tables.order
# has it, as no modprobe runs here.
load nf_tables
row nf_tables ex_nft hits
row nfnetlink ex_nft hits
unload nf_tables nfnetlink libcrc32c crc32c_generic veth dummy

load snd-dummy
row snd-dummy ex_dummy_pcm hits
row snd-pcm ex_dummy_pcm hits
row snd-timer ex_timer hits
row snd ex_control hits
row soundcore ex_oss hits
load snd-aloop
row snd-aloop ex_aloop hits
unload snd-aloop snd-dummy snd-pcm snd-timer snd soundcore
