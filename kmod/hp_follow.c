// SPDX-License-Identifier: GPL-2.0
/*
 * Following the targets' modules: the module notifiers. A followed target
 * is attached at its COMING, before its init runs (after every other
 * notifier); its init text is let go at LIVE; at GOING it is detached, its
 * leak report logged, and it is awaited again.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>

#include "hp_internal.h"

/* ---- following the targets' modules ---- */

static struct hp_target *hp_target_of(const struct module *mod)
{
	struct hp_target *t;

	list_for_each_entry(t, &hp_targets, node)
		if (t->mod == mod)
			return t;
	return NULL;
}

/* COMING, as hp_module_coming_nb passes it on; hp_module_nb ignores COMING. */
#define HP_STATE_COMING_LAST (-1UL)

static int hp_module_event(struct notifier_block *nb, unsigned long state,
			   void *data)
{
	struct module *mod = data;
	struct hp_target *t;

	/*
	 * Always through the lock, never a peek first: an attach between
	 * finding its module and setting t->mod holds the lock, and a GOING
	 * must wait for it, or a forced unload frees the module under it.
	 */
	mutex_lock(&hp_lock);
	switch (state) {
	case HP_STATE_COMING_LAST:
		t = hp_find_target(mod->name);
		if (t && t->follow && t->state != HP_ATTACHED) {
			pr_info("%s is loading: attaching before its init\n", mod->name);
			t->state = hp_target_attach(t, mod) ? HP_REFUSED : HP_ATTACHED;
		}
		break;
	case MODULE_STATE_LIVE:
		/* Before kprobes' notifier and before the kernel frees init text. */
		t = hp_target_of(mod);
		if (t)
			hp_faults_load_event(t->shared, false);
		if (t && t->init.session)
			hp_attachment_detach(t->name, &t->init, "init done");
		break;
	case MODULE_STATE_GOING:
		t = hp_target_of(mod);
		if (!t)
			break;
		pr_info("%s is being unloaded: detaching\n", mod->name);
		{
			/* Its text is still mapped: the sites still have names. */
			const struct hp_session *sessions[] = { t->core.session, t->init.session };

			hp_leaks_log(t->shared, t->name, sessions, ARRAY_SIZE(sessions));
			hp_faults_load_event(t->shared, true);
		}
		hp_target_detach(t, "target unloaded");
		if (t->follow) {
			t->state = HP_AWAITED;
		} else {
			list_del(&t->node);
			hp_target_free(t);
		}
		break;
	}
	mutex_unlock(&hp_lock);
	return NOTIFY_OK;
}

/* LIVE and GOING: before kprobes' own notifier (priority 0), which would
 * drop our probes without restoring the text. */
static struct notifier_block hp_module_nb = {
	.notifier_call = hp_module_event,
	.priority = 1,
};

/*
 * COMING: after every other notifier. Some patch the new module's text at
 * COMING (static_call's, at priority 0, rewrites the calls of
 * cond_resched() and friends): attaching before them would decode, and
 * keep as the reference for detach, text that is not final yet.
 */
static int hp_module_coming(struct notifier_block *nb, unsigned long state,
			    void *data)
{
	if (state != MODULE_STATE_COMING)
		return NOTIFY_DONE;
	return hp_module_event(nb, HP_STATE_COMING_LAST, data);
}

static struct notifier_block hp_module_coming_nb = {
	.notifier_call = hp_module_coming,
	.priority = INT_MIN,
};

int hp_follow_start(void)
{
	int err = register_module_notifier(&hp_module_nb);

	if (err)
		return err;
	err = register_module_notifier(&hp_module_coming_nb);
	if (err)
		unregister_module_notifier(&hp_module_nb);
	return err;
}

void hp_follow_stop(void)
{
	unregister_module_notifier(&hp_module_coming_nb);
	unregister_module_notifier(&hp_module_nb);
}
