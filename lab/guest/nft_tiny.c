// SPDX-License-Identifier: GPL-2.0-only
/*
 * The busybox guest has no nft, so this is the least of one: enough netlink
 * to make nf_tables do real work. Built static on the host by the sweep.
 *
 *   nft_tiny add NAME   one batch: table NAME (ip), base chain "input" on the
 *                       IPv4 input hook, one rule with a counter
 *   nft_tiny del NAME   one batch: delete table NAME
 *
 * Exits 0 only when the kernel acknowledged every message of the batch; an
 * error names the errno the kernel returned.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static char buf[8192];
static size_t len;
static uint32_t seq;
static int acks_wanted;

static void *put(const void *data, size_t size)
{
	void *at = buf + len;

	if (len + NLMSG_ALIGN(size) > sizeof(buf)) {
		fprintf(stderr, "nft_tiny: batch too large\n");
		_exit(2);
	}
	memset(at, 0, NLMSG_ALIGN(size));
	if (data)
		memcpy(at, data, size);
	len += NLMSG_ALIGN(size);
	return at;
}

/* Starts a message; returns its offset so that end_msg can set its length. */
static size_t begin_msg(uint16_t type, uint16_t flags, uint8_t family)
{
	size_t start = len;
	struct nlmsghdr *nlh = put(NULL, sizeof(*nlh));
	struct nfgenmsg *nfg;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = ++seq;
	if (flags & NLM_F_ACK)
		acks_wanted++;
	nfg = put(NULL, sizeof(*nfg));
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
	return start;
}

static void end_msg(size_t start)
{
	((struct nlmsghdr *)(buf + start))->nlmsg_len = len - start;
}

static void attr(uint16_t type, const void *data, size_t size)
{
	struct nlattr *a = put(NULL, NLA_HDRLEN + size);

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + size;
	memcpy((char *)a + NLA_HDRLEN, data, size);
}

static void attr_str(uint16_t type, const char *s)
{
	attr(type, s, strlen(s) + 1);
}

static void attr_be32(uint16_t type, uint32_t v)
{
	v = htonl(v);
	attr(type, &v, sizeof(v));
}

static size_t nest_begin(uint16_t type)
{
	size_t start = len;
	struct nlattr *a = put(NULL, NLA_HDRLEN);

	a->nla_type = type | NLA_F_NESTED;
	return start;
}

static void nest_end(size_t start)
{
	((struct nlattr *)(buf + start))->nla_len = len - start;
}

static void batch_edge(uint16_t type)
{
	end_msg(begin_msg(type, 0, AF_UNSPEC));
}

static uint16_t nft(int msg)
{
	return (NFNL_SUBSYS_NFTABLES << 8) | msg;
}

static void build_add(const char *table)
{
	size_t m, hook, exprs, elem;

	batch_edge(NFNL_MSG_BATCH_BEGIN);
	m = begin_msg(nft(NFT_MSG_NEWTABLE), NLM_F_CREATE | NLM_F_ACK, NFPROTO_IPV4);
	attr_str(NFTA_TABLE_NAME, table);
	end_msg(m);

	m = begin_msg(nft(NFT_MSG_NEWCHAIN), NLM_F_CREATE | NLM_F_ACK, NFPROTO_IPV4);
	attr_str(NFTA_CHAIN_TABLE, table);
	attr_str(NFTA_CHAIN_NAME, "input");
	hook = nest_begin(NFTA_CHAIN_HOOK);
	attr_be32(NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_IN);
	attr_be32(NFTA_HOOK_PRIORITY, 0);
	nest_end(hook);
	attr_str(NFTA_CHAIN_TYPE, "filter");
	end_msg(m);

	m = begin_msg(nft(NFT_MSG_NEWRULE), NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, NFPROTO_IPV4);
	attr_str(NFTA_RULE_TABLE, table);
	attr_str(NFTA_RULE_CHAIN, "input");
	exprs = nest_begin(NFTA_RULE_EXPRESSIONS);
	elem = nest_begin(NFTA_LIST_ELEM);
	attr_str(NFTA_EXPR_NAME, "counter");
	nest_end(elem);
	nest_end(exprs);
	end_msg(m);
	batch_edge(NFNL_MSG_BATCH_END);
}

static void build_del(const char *table)
{
	size_t m;

	batch_edge(NFNL_MSG_BATCH_BEGIN);
	m = begin_msg(nft(NFT_MSG_DELTABLE), NLM_F_ACK, NFPROTO_IPV4);
	attr_str(NFTA_TABLE_NAME, table);
	end_msg(m);
	batch_edge(NFNL_MSG_BATCH_END);
}

int main(int argc, char **argv)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	struct timeval timeout = { .tv_sec = 10 };
	static char reply[16384];
	int fd, acked = 0;

	if (argc != 3 || (strcmp(argv[1], "add") && strcmp(argv[1], "del"))) {
		fprintf(stderr, "usage: nft_tiny add|del TABLE\n");
		return 2;
	}
	if (!strcmp(argv[1], "add"))
		build_add(argv[2]);
	else
		build_del(argv[2]);

	fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	if (fd < 0) {
		perror("nft_tiny: socket");
		return 1;
	}
	/* A lost reply must fail the test, not hang the guest. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	if (sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) != (ssize_t)len) {
		perror("nft_tiny: send");
		return 1;
	}
	while (acked < acks_wanted) {
		ssize_t got = recv(fd, reply, sizeof(reply), 0);
		struct nlmsghdr *nlh;

		if (got < 0) {
			perror("nft_tiny: recv");
			return 1;
		}
		for (nlh = (struct nlmsghdr *)reply; NLMSG_OK(nlh, got); nlh = NLMSG_NEXT(nlh, got)) {
			struct nlmsgerr *e = NLMSG_DATA(nlh);

			if (nlh->nlmsg_type != NLMSG_ERROR)
				continue;
			if (e->error) {
				fprintf(stderr, "nft_tiny: %s: message %u refused: %s\n", argv[1],
					nlh->nlmsg_seq, strerror(-e->error));
				return 1;
			}
			acked++;
		}
	}
	close(fd);
	return 0;
}
