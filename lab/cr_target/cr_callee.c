// SPDX-License-Identifier: GPL-2.0
/*
 * cr_callee - functions another module calls, for hp_patcher's tests of
 * "any callee": cr_target calls each of them from its round, and the tests
 * intercept those calls. Built with ftrace like any driver, so every
 * function starts with an fentry site; with module BTF where the headers
 * allow it (Debian's 6.12 ships vmlinux in its headers, 6.1 does not).
 *
 * debugfs (/sys/kernel/debug/cr_callee/):
 *   gate  w  any write wakes one caller sleeping in cr_gate_wait();
 *            "load NAME" also makes that caller request_module(NAME) before
 *            it returns: an intercepted call that loads a module
 */

#include <linux/module.h>
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/string.h>
#include <linux/jiffies.h>
#include <linux/kmod.h>
#include <linux/slab.h>
#include "cr_callee.h"

long cr_mixed(int level, size_t len, const void *cookie, const char *label,
	      enum cr_mode mode, bool urgent)
{
	long label_len = label ? (long)strlen(label) : -1;

	return cr_mixed_expected(level, len, cookie, label_len, mode, urgent);
}
EXPORT_SYMBOL_GPL(cr_mixed);

bool cr_match(const char *name, const char *pattern, size_t n)
{
	return name && pattern && strncmp(name, pattern, n) == 0;
}
EXPORT_SYMBOL_GPL(cr_match);

u64 cr_seven(u64 a, u64 b, u64 c, u64 d, u64 e, u64 f, u64 g)
{
	return cr_seven_expected(a, b, c, d, e, f, g);
}
EXPORT_SYMBOL_GPL(cr_seven);

u64 cr_by_value(struct cr_triple t)
{
	return cr_triple_expected(t);
}
EXPORT_SYMBOL_GPL(cr_by_value);

u64 cr_wide(int a, u64 b, int c)
{
	return cr_wide_expected(a, b, c);
}
EXPORT_SYMBOL_GPL(cr_wide);

long cr_sum(int n, ...)
{
	long sum = 0;
	va_list ap;

	va_start(ap, n);
	while (n-- > 0)
		sum += va_arg(ap, long);
	va_end(ap);
	return sum;
}
EXPORT_SYMBOL_GPL(cr_sum);

void *cr_buf_get(size_t size)
{
	return kzalloc(size, GFP_KERNEL);
}
EXPORT_SYMBOL_GPL(cr_buf_get);

/* The object is the second argument, so that --pair must say which. */
void cr_buf_put(int reason, void *buf)
{
	kfree(buf);
}
EXPORT_SYMBOL_GPL(cr_buf_put);

static DECLARE_COMPLETION(cr_gate);
/* Set by a "load NAME" write before it wakes the caller. */
static char cr_gate_module[MODULE_NAME_LEN];

long cr_gate_wait(unsigned int ticket)
{
	if (!wait_for_completion_timeout(&cr_gate, 120 * HZ))
		return -ETIMEDOUT;
	if (cr_gate_module[0]) {
		int err = request_module("%s", cr_gate_module);

		cr_gate_module[0] = '\0';
		if (err)
			return err < 0 ? err : -ENOEXEC;
	}
	return (long)ticket * 2 + 1;
}
EXPORT_SYMBOL_GPL(cr_gate_wait);

static ssize_t cr_gate_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	char buf[8 + MODULE_NAME_LEN] = "";

	if (copy_from_user(buf, ubuf, min(count, sizeof(buf) - 1)))
		return -EFAULT;
	if (!strncmp(buf, "load ", 5))
		strscpy(cr_gate_module, strim(buf + 5), sizeof(cr_gate_module));
	complete(&cr_gate);
	return count;
}

static const struct file_operations cr_gate_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.write	= cr_gate_write,
	.llseek	= default_llseek,
};

static struct dentry *cr_dir;

static int __init cr_callee_init(void)
{
	cr_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("gate", 0200, cr_dir, NULL, &cr_gate_fops);
	return 0;
}

static void __exit cr_callee_exit(void)
{
	debugfs_remove_recursive(cr_dir);
}

module_init(cr_callee_init);
module_exit(cr_callee_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Functions for cr_target to call: typed arguments, refusals, a sleeping call");
