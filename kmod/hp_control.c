// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/hp_patcher: the control device (docs/control.md). A misc device,
 * because lockdown leaves it usable where debugfs refuses writes; mode 0600,
 * and every command also needs CAP_SYS_ADMIN. One write is one command; its
 * reply waits in the open file for reads. Commands run under hp_lock, so
 * they are serialized with each other and with the module notifier.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/uaccess.h>

#include "hp_internal.h"

static uint reply_limit;
module_param(reply_limit, uint, 0400);
MODULE_PARM_DESC(reply_limit, "testing: a reply's text grows to at most this many bytes, as if memory ran out (0: no limit)");

struct hp_file {
	struct mutex lock;	/* one command or read at a time per open file */
	struct hp_reply *reply;
	/*
	 * A new reply waits: the next read starts at its beginning. A write
	 * cannot rewind the file itself, since the VFS stores the position
	 * back only when the write succeeds, and a failed command's reply
	 * (its `error` line) must be read whole too.
	 */
	bool fresh;
};

/* The drains a detach command started: it waits for them without hp_lock. */
struct hp_drain_range {
	u64 from, to;
};

static const char *const hp_state_names[] = {
	[HP_ATTACHED] = "attached",
	[HP_AWAITED] = "awaited",
	[HP_REFUSED] = "refused",
};

static const char *const hp_sink_names[] = {
	[HP_SINK_TRACE] = "trace",
	[HP_SINK_PRINTK] = "printk",
	[HP_SINK_NONE] = "none",
};

__printf(2, 3) static void hp_reply_printf(struct hp_reply *r, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	hp_reply_line(r, line);
}

static void hp_target_totals(struct hp_target *t, u64 totals[3])
{
	struct hp_attachment *atts[] = { &t->core, &t->init };
	unsigned int i, k;

	totals[0] = totals[1] = totals[2] = 0;
	for (i = 0; i < ARRAY_SIZE(atts); i++) {
		u64 one[3];

		if (!atts[i]->session)
			continue;
		hp_session_totals(atts[i]->session, one);
		for (k = 0; k < 3; k++)
			totals[k] += one[k];
	}
}

static void hp_reply_target(struct hp_reply *r, struct hp_target *t)
{
	u64 totals[3];

	hp_target_totals(t, totals);
	hp_reply_printf(r, "target name=%s state=%s sink=%s follow=%d sites=%llu armed=%llu hits=%llu",
			t->name, hp_state_names[t->state], hp_sink_names[t->sink],
			t->follow, totals[0], totals[1], totals[2]);
}

static int hp_cmd_attach(const struct hp_command *cmd, struct hp_reply *r)
{
	struct hp_target *t = hp_find_target(cmd->module);
	struct module *mod;
	int err;

	if (t) {
		hp_err("%s is already a target (%s): detach it first",
		       t->name, hp_state_names[t->state]);
		return -EBUSY;
	}
	mod = hp_get_module(cmd->module);
	if (IS_ERR(mod) && (PTR_ERR(mod) != -ENOENT || !cmd->follow)) {
		if (PTR_ERR(mod) == -ENOENT)
			hp_err("module %s is not loaded (attach with follow to await it)",
			       cmd->module);
		return PTR_ERR(mod);
	}
	err = hp_target_add(cmd->module, cmd->functions, cmd->sink, cmd->burst,
			    cmd->leak_slots, cmd->kernel_frees, cmd->follow,
			    IS_ERR(mod) ? NULL : mod, &t);
	if (!IS_ERR(mod))
		module_put(mod);
	if (err)
		return err;
	hp_reply_target(r, t);
	return 0;
}

static void hp_detach_one(struct hp_target *t, const char *why, struct hp_reply *r,
			  struct hp_drain_range *drains)
{
	u64 totals[3], last;

	/* The counters are per CPU: sum them (the other replies with totals
	 * come after a sync already). */
	hp_attachment_sync(&t->core);
	hp_attachment_sync(&t->init);
	hp_target_totals(t, totals);
	last = hp_target_detach(t, why);
	if (last)
		drains->to = last;
	list_del(&t->node);
	hp_reply_printf(r, "detached name=%s calls=%llu", t->name, totals[2]);
	hp_target_free(t);
}

static int hp_cmd_detach(const struct hp_command *cmd, struct hp_reply *r,
			 struct hp_drain_range *drains)
{
	struct hp_target *t, *next;

	/* Under hp_lock, as every detach: this command's drains are from..to. */
	drains->from = hp_drains_next_id();
	if (cmd->verb == HP_CMD_DETACH_ALL) {
		list_for_each_entry_safe(t, next, &hp_targets, node)
			hp_detach_one(t, "detach-all", r, drains);
		return 0;
	}
	t = hp_find_target(cmd->module);
	if (!t) {
		hp_err("%s is not a target: nothing to detach", cmd->module);
		return -EINVAL;
	}
	hp_detach_one(t, "detach", r, drains);
	return 0;
}

/*
 * After hp_lock is released: a detach returns once its callers are out of
 * the intercepted calls. A signal (Ctrl-C in hpctl) ends the wait early;
 * the detach is done all the same, and its drains finish in the
 * background, shown by `targets`.
 */
static void hp_wait_for_drains(const struct hp_command *cmd, const struct hp_drain_range *drains,
			       struct hp_reply *r)
{
	if (!drains->to || !hp_drains_wait(drains->from, drains->to))
		return;
	if (cmd->verb == HP_CMD_DETACH)
		hp_reply_printf(r, "detaching name=%s inside=%llu background=1", cmd->module,
				hp_drains_inside(cmd->module));
	else
		hp_reply_printf(r, "detaching name=* background=1");
}

static int hp_cmd_plan(const struct hp_command *cmd, struct hp_reply *r)
{
	struct hp_attachment att = {};
	struct module *mod = hp_get_module(cmd->module);
	int err;

	if (IS_ERR(mod)) {
		if (PTR_ERR(mod) == -ENOENT)
			hp_err("module %s is not loaded", cmd->module);
		return PTR_ERR(mod);
	}
	if (cmd->verb == HP_CMD_CALLEES) {
		err = hp_list_callees(mod, r);
	} else {
		err = hp_plan_module(mod, cmd->functions, &att);
		if (!err) {
			hp_reply_sites(r, att.session);
			hp_attachment_free(&att);
		}
	}
	module_put(mod);
	return err;
}

/* The targets a listing covers: one by name (which must exist), or all. */
static int hp_selected(const struct hp_command *cmd, struct hp_target **only)
{
	*only = NULL;
	if (!cmd->has_module)
		return 0;
	*only = hp_find_target(cmd->module);
	if (!*only) {
		hp_err("%s is not a target", cmd->module);
		return -EINVAL;
	}
	return 0;
}

static int hp_cmd_list(const struct hp_command *cmd, struct hp_reply *r)
{
	struct hp_target *t, *only;
	int err = hp_selected(cmd, &only);

	if (err)
		return err;
	list_for_each_entry(t, &hp_targets, node) {
		const struct hp_session *sessions[] = { t->core.session, t->init.session };

		if (only && t != only)
			continue;
		hp_attachment_sync(&t->core);
		hp_attachment_sync(&t->init);
		if (cmd->verb == HP_CMD_TARGETS) {
			hp_reply_target(r, t);
		} else if (cmd->verb == HP_CMD_STATS) {
			hp_reply_stats(r, sessions, ARRAY_SIZE(sessions));
		} else if (cmd->verb == HP_CMD_FAULTS) {
			hp_reply_faults(r, t->shared, t->name, sessions, ARRAY_SIZE(sessions));
		} else if (cmd->verb == HP_CMD_LEAKS) {
			if (only && !hp_leaks_enabled(t->shared)) {
				hp_err("%s was attached without leaks", t->name);
				return -EINVAL;
			}
			hp_reply_leaks(r, t->shared, t->name, sessions, ARRAY_SIZE(sessions));
			if (t->kfrees)
				hp_kfrees_reply(r, t->name, t->kfrees);
		} else {
			if (t->core.session)
				hp_reply_sites(r, t->core.session);
			if (t->init.session)
				hp_reply_sites(r, t->init.session);
		}
	}
	/* Detached targets whose callers are still inside an intercepted call. */
	if (cmd->verb == HP_CMD_TARGETS && !only)
		hp_drains_reply(r);
	return 0;
}

/*
 * fail <module> <rule> | clear | next: on a target, attached or
 * awaited. A rule the module cannot honour is refused here, with its reason.
 */
static int hp_cmd_fail(const struct hp_command *cmd, struct hp_reply *r)
{
	struct hp_target *t = hp_find_target(cmd->module);
	const struct hp_session *sessions[2];
	u32 cleared;
	int err;

	if (!t) {
		hp_err("%s is not a target: attach it first", cmd->module);
		return -EINVAL;
	}
	sessions[0] = t->core.session;
	sessions[1] = t->init.session;
	if (cmd->verb == HP_CMD_FAIL) {
		err = hp_faults_add(t->shared, t->name, cmd->functions, strlen(cmd->functions),
				    sessions, ARRAY_SIZE(sessions));
		/* Its sites now need the trampoline. */
		hp_attachment_route(&t->core);
		hp_attachment_route(&t->init);
		if (!err)
			hp_reply_faults(r, t->shared, t->name, sessions, 0);
		return err;
	}
	if (cmd->verb == HP_CMD_FAIL_NEXT) {
		hp_faults_next_round(t->shared, false);
		hp_reply_faults(r, t->shared, t->name, sessions, 0);
		return 0;
	}
	cleared = hp_faults_clear(t->shared, sessions, ARRAY_SIZE(sessions));
	/* A caller that read a rule before the clear is out of it after this. */
	synchronize_rcu();
	hp_faults_reap(t->shared);
	hp_attachment_route(&t->core);
	hp_attachment_route(&t->init);
	hp_reply_printf(r, "cleared module=%s rules=%u", t->name, cleared);
	return 0;
}

static int hp_cmd_info(struct hp_reply *r)
{
	size_t i;

	hp_reply_printf(r, "info version=1 slab_buckets=%d call_thunks=%d raw_pointers=%d",
			IS_ENABLED(CONFIG_SLAB_BUCKETS), IS_ENABLED(CONFIG_CALL_THUNKS),
			hp_raw_pointers);
	for (i = 0; i < hp_gfp_name_count(); i++)
		hp_reply_printf(r, "gfp mask=%#lx name=%s", hp_gfp_names[i].mask,
				hp_gfp_names[i].name);
	hp_reply_functions(r, hp_catalogue_addrs, hp_catalogue_len);
	return 0;
}

static int hp_execute(const struct hp_command *cmd, struct hp_reply *r,
		      struct hp_drain_range *drains)
{
	switch (cmd->verb) {
	case HP_CMD_ATTACH:
		return hp_cmd_attach(cmd, r);
	case HP_CMD_DETACH:
	case HP_CMD_DETACH_ALL:
		return hp_cmd_detach(cmd, r, drains);
	case HP_CMD_PLAN:
	case HP_CMD_CALLEES:
		return hp_cmd_plan(cmd, r);
	case HP_CMD_TARGETS:
	case HP_CMD_SITES:
	case HP_CMD_STATS:
		return hp_cmd_list(cmd, r);
	case HP_CMD_INFO:
		return hp_cmd_info(r);
	case HP_CMD_FAIL:
	case HP_CMD_FAIL_CLEAR:
	case HP_CMD_FAIL_NEXT:
		return hp_cmd_fail(cmd, r);
	case HP_CMD_FAULTS:
	case HP_CMD_LEAKS:
		return hp_cmd_list(cmd, r);
	}
	return -EINVAL;
}

static bool hp_allowed(const struct file *file)
{
	/*
	 * Both the task and whoever opened the file: a file opened without
	 * the capability and handed to a privileged writer (a confused
	 * deputy, e.g. a setuid program's stdout) must not act for it.
	 */
	return capable(CAP_SYS_ADMIN) && file_ns_capable(file, &init_user_ns, CAP_SYS_ADMIN);
}

static bool hp_changes_state(const struct hp_command *cmd)
{
	return cmd && (cmd->verb == HP_CMD_ATTACH || cmd->verb == HP_CMD_DETACH ||
		       cmd->verb == HP_CMD_DETACH_ALL);
}

static int hp_open(struct inode *inode, struct file *file)
{
	struct hp_file *f;

	/* The opener's credentials are file->f_cred from here on. */
	if (!capable(CAP_SYS_ADMIN)) {
		pr_warn_ratelimited("control: %s (pid %d) lacks CAP_SYS_ADMIN: open refused\n",
				    current->comm, task_pid_nr(current));
		return -EPERM;
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->reply = hp_reply_new(reply_limit);
	if (!f->reply) {
		kfree(f);
		return -ENOMEM;
	}
	mutex_init(&f->lock);
	file->private_data = f;
	/* Replies are read from their start, in order: no pread, no seek. */
	return nonseekable_open(inode, file);
}

static int hp_release(struct inode *inode, struct file *file)
{
	struct hp_file *f = file->private_data;

	hp_reply_free(f->reply);
	kfree(f);
	return 0;
}

static ssize_t hp_write(struct file *file, const char __user *buf, size_t len,
			loff_t *ppos)
{
	struct hp_file *f = file->private_data;
	struct hp_drain_range drains = {};
	struct hp_command *cmd;
	u8 *text;
	int err;

	if (!hp_allowed(file)) {
		pr_warn_ratelimited("control: %s (pid %d) lacks CAP_SYS_ADMIN: refused\n",
				    current->comm, task_pid_nr(current));
		return -EPERM;
	}
	/* Interruptible: a detach holds it while it waits for callers. */
	if (mutex_lock_interruptible(&f->lock))
		return -ERESTARTSYS;
	hp_reply_clear(f->reply);
	if (len > HP_MAX_COMMAND) {
		/* Not even copied: the grammar's limit, said the grammar's way. */
		pr_err("control: command longer than %d bytes\n", HP_MAX_COMMAND);
		hp_reply_line(f->reply, "error control: command longer than 1024 bytes");
		err = -EINVAL;
		goto out;
	}
	text = memdup_user(buf, len);
	cmd = kzalloc(sizeof(*cmd), GFP_KERNEL);
	if (IS_ERR(text) || !cmd) {
		err = IS_ERR(text) ? PTR_ERR(text) : -ENOMEM;
		if (!IS_ERR(text))
			kfree(text);
		kfree(cmd);
		goto out;
	}
	err = hp_control_parse(text, len, cmd, f->reply);
	kfree(text);
	if (!err && cmd->verb == HP_CMD_PROGRESS) {
		/* Never waits for hp_lock: what a long attach is doing. */
		hp_progress_reply(f->reply);
	} else if (!err && mutex_lock_interruptible(&hp_lock)) {
		/*
		 * A signal while an attach holds the lock (btrfs's arming takes
		 * 40 s under TCG): nothing was done; the command can be given up.
		 */
		err = -ERESTARTSYS;
	} else if (!err) {
		hp_capture_errors(f->reply);
		err = hp_execute(cmd, f->reply, &drains);
		hp_capture_errors(NULL);
		mutex_unlock(&hp_lock);
		hp_wait_for_drains(cmd, &drains, f->reply);
	}
	/*
	 * A reply that could not grow: a query answers ENOMEM (nothing
	 * changed, ask again); a command that changed something succeeded,
	 * and its reply ends with a `truncated` line, for which room is kept.
	 */
	if (!err && hp_reply_lost(f->reply) && !hp_changes_state(cmd))
		err = -ENOMEM;
	kfree(cmd);
out:
	f->fresh = true;
	mutex_unlock(&f->lock);
	return err ? err : len;
}

static ssize_t hp_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	struct hp_file *f = file->private_data;
	const u8 *data;
	u64 size;
	ssize_t n;

	if (mutex_lock_interruptible(&f->lock))
		return -ERESTARTSYS;
	if (f->fresh)
		*ppos = 0;
	data = hp_reply_data(f->reply, &size);
	n = simple_read_from_buffer(buf, len, ppos, data, size);
	/* The VFS stores the position back only when the read succeeds. */
	if (n >= 0)
		f->fresh = false;
	mutex_unlock(&f->lock);
	return n;
}

static const struct file_operations hp_fops = {
	.owner = THIS_MODULE,
	.open = hp_open,
	.release = hp_release,
	.write = hp_write,
	.read = hp_read,
};

static struct miscdevice hp_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hp_patcher",
	.fops = &hp_fops,
	.mode = 0600,
};

int hp_control_init(void)
{
	return misc_register(&hp_misc);
}

void hp_control_exit(void)
{
	misc_deregister(&hp_misc);
}
