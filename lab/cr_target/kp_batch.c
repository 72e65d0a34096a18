// SPDX-License-Identifier: GPL-2.0
/*
 * The attach and detach floor `cargo xtask bench` measures hp_patcher
 * against: kprobes on given addresses, registered with one
 * register_kprobes() and removed with one unregister_kprobes(), each timed
 * in the kernel. Their handlers do nothing. Through debugfs (kp_batch/):
 *   addrs   write: addresses in hex, whitespace-separated, appended
 *   ctl     write: "arm", "disarm" or "clear"
 *   result  read: "probes=N register_ns=R unregister_ns=U" (the last of each)
 *   now     read: ktime_get_ns(), for timing a command from a shell
 */
#include <linux/debugfs.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define KP_BATCH_MAX 4096

static DEFINE_MUTEX(kp_batch_lock);
static struct kprobe *kp_batch_probes;
static struct kprobe **kp_batch_list;
static unsigned int kp_batch_count;
static bool kp_batch_armed;
static u64 kp_batch_register_ns, kp_batch_unregister_ns;
static struct dentry *kp_batch_dir;

static int kp_batch_pre(struct kprobe *kp, struct pt_regs *regs)
{
	return 0;
}

/* As hp_patcher's: keeps kprobes from optimizing the probes. */
static void kp_batch_post(struct kprobe *kp, struct pt_regs *regs, unsigned long flags)
{
}

static void kp_batch_disarm(void)
{
	u64 started;

	if (!kp_batch_armed)
		return;
	started = ktime_get_ns();
	unregister_kprobes(kp_batch_list, kp_batch_count);
	kp_batch_unregister_ns = ktime_get_ns() - started;
	kp_batch_armed = false;
}

static int kp_batch_arm(void)
{
	unsigned int i;
	u64 started;
	int err;

	if (kp_batch_armed || !kp_batch_count)
		return -EINVAL;
	for (i = 0; i < kp_batch_count; i++) {
		unsigned long addr = (unsigned long)kp_batch_probes[i].addr;

		memset(&kp_batch_probes[i], 0, sizeof(kp_batch_probes[i]));
		kp_batch_probes[i].addr = (kprobe_opcode_t *)addr;
		kp_batch_probes[i].pre_handler = kp_batch_pre;
		kp_batch_probes[i].post_handler = kp_batch_post;
		kp_batch_list[i] = &kp_batch_probes[i];
	}
	started = ktime_get_ns();
	err = register_kprobes(kp_batch_list, kp_batch_count);
	kp_batch_register_ns = ktime_get_ns() - started;
	kp_batch_armed = !err;
	return err;
}

static ssize_t kp_batch_addrs_write(struct file *file, const char __user *ubuf,
				   size_t len, loff_t *ppos)
{
	char *buf, *cursor, *word;
	ssize_t ret = len;

	buf = memdup_user_nul(ubuf, len);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	mutex_lock(&kp_batch_lock);
	cursor = buf;
	while ((word = strsep(&cursor, " \t\n"))) {
		unsigned long addr;

		if (!*word)
			continue;
		if (kp_batch_armed || kp_batch_count == KP_BATCH_MAX || kstrtoul(word, 16, &addr)) {
			ret = -EINVAL;
			break;
		}
		kp_batch_probes[kp_batch_count++].addr = (kprobe_opcode_t *)addr;
	}
	mutex_unlock(&kp_batch_lock);
	kfree(buf);
	return ret;
}

static ssize_t kp_batch_ctl_write(struct file *file, const char __user *ubuf,
				 size_t len, loff_t *ppos)
{
	char cmd[16] = {};
	int err = 0;

	if (len >= sizeof(cmd) || copy_from_user(cmd, ubuf, len))
		return -EINVAL;
	strim(cmd);
	mutex_lock(&kp_batch_lock);
	if (!strcmp(cmd, "arm")) {
		err = kp_batch_arm();
	} else if (!strcmp(cmd, "disarm")) {
		kp_batch_disarm();
	} else if (!strcmp(cmd, "clear")) {
		kp_batch_disarm();
		kp_batch_count = 0;
	} else {
		err = -EINVAL;
	}
	mutex_unlock(&kp_batch_lock);
	return err ? err : len;
}

static ssize_t kp_batch_result_read(struct file *file, char __user *ubuf,
				   size_t len, loff_t *ppos)
{
	char line[96];
	int n;

	mutex_lock(&kp_batch_lock);
	n = scnprintf(line, sizeof(line), "probes=%u register_ns=%llu unregister_ns=%llu\n",
		      kp_batch_count, kp_batch_register_ns, kp_batch_unregister_ns);
	mutex_unlock(&kp_batch_lock);
	return simple_read_from_buffer(ubuf, len, ppos, line, n);
}

static ssize_t kp_batch_now_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	char line[24];
	int n = scnprintf(line, sizeof(line), "%llu\n", ktime_get_ns());

	return simple_read_from_buffer(ubuf, len, ppos, line, n);
}

static const struct file_operations kp_batch_addrs_fops = { .write = kp_batch_addrs_write };
static const struct file_operations kp_batch_ctl_fops = { .write = kp_batch_ctl_write };
static const struct file_operations kp_batch_result_fops = { .read = kp_batch_result_read };
static const struct file_operations kp_batch_now_fops = { .read = kp_batch_now_read };

static int __init kp_batch_init(void)
{
	kp_batch_probes = kvcalloc(KP_BATCH_MAX, sizeof(*kp_batch_probes), GFP_KERNEL);
	kp_batch_list = kvcalloc(KP_BATCH_MAX, sizeof(*kp_batch_list), GFP_KERNEL);
	if (!kp_batch_probes || !kp_batch_list) {
		kvfree(kp_batch_probes);
		kvfree(kp_batch_list);
		return -ENOMEM;
	}
	kp_batch_dir = debugfs_create_dir("kp_batch", NULL);
	debugfs_create_file("addrs", 0200, kp_batch_dir, NULL, &kp_batch_addrs_fops);
	debugfs_create_file("ctl", 0200, kp_batch_dir, NULL, &kp_batch_ctl_fops);
	debugfs_create_file("result", 0400, kp_batch_dir, NULL, &kp_batch_result_fops);
	debugfs_create_file("now", 0400, kp_batch_dir, NULL, &kp_batch_now_fops);
	return 0;
}

static void __exit kp_batch_exit(void)
{
	debugfs_remove_recursive(kp_batch_dir);
	mutex_lock(&kp_batch_lock);
	kp_batch_disarm();
	mutex_unlock(&kp_batch_lock);
	kvfree(kp_batch_list);
	kvfree(kp_batch_probes);
}

module_init(kp_batch_init);
module_exit(kp_batch_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kprobes on given addresses, registered and removed as one batch, timed: the attach floor of cargo xtask bench");
