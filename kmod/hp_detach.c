// SPDX-License-Identifier: GPL-2.0
/*
 * Detaching in two halves. Under hp_lock, the probes go and the text is
 * checked: that is bounded (an RCU grace period and kprobes' own text
 * pokes). The wait for callers still inside an intercepted call, which is
 * not bounded (a callee may sleep for as long as it likes), happens after,
 * on hp_wq, with no lock held: the module notifier takes hp_lock on every
 * module's load and unload, so waiting there would stall every insmod and
 * rmmod on the machine, and deadlock when the callee itself loads a module.
 *
 * Until its callers are out, a detached attachment is a *drain*: listed for
 * `targets` (state detaching) and reported every HP_DRAIN_REPORT_SECS. One
 * that finds callers inside takes a reference on hp_patcher, so that rmmod
 * says "in use" instead of waiting without end; one with none inside (the
 * common case: only the RCU-tasks waits) takes none, so that an rmmod right
 * after a detach just works, hp_exit waiting the few milliseconds for it.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/rcupdate.h>
#include <linux/rcupdate_trace.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/jiffies.h>

#include "hp_internal.h"

#define HP_DRAIN_POLL_MS 5
#define HP_DRAIN_SLOW_POLL_MS 100
#define HP_DRAIN_REPORT_SECS 5

/* Planning and draining run here: hp_exit destroys it, which waits until
 * every work item has returned from our text. */
struct workqueue_struct *hp_wq;

struct hp_drain {
	struct list_head node;		/* on hp_drains */
	u64 id;
	char name[MODULE_NAME_LEN];
	char why[32];
	struct hp_attachment att;
	u64 missed;			/* probe hits kprobes kept from us */
	u64 inside;			/* callers still inside, as last counted */
	unsigned long started, next_report;	/* jiffies */
	bool holds_module;		/* a reference on hp_patcher, once callers are seen inside */
	struct delayed_work work;
};

/*
 * The list changes under both locks: the mutex lets `targets` format its
 * lines (which allocates) while walking it, the spinlock lets a wait
 * condition, which must not sleep, look at it. Order: hp_lock, then the
 * mutex, then the spinlock.
 */
static DEFINE_MUTEX(hp_drains_mutex);
static DEFINE_SPINLOCK(hp_drains_lock);
static LIST_HEAD(hp_drains);
static u64 hp_drain_last_id;
static DECLARE_WAIT_QUEUE_HEAD(hp_drained);

struct hp_drain *hp_drain_alloc(void)
{
	struct hp_drain *d = kvzalloc(sizeof(*d), GFP_KERNEL | __GFP_NOWARN);

	if (d)
		INIT_LIST_HEAD(&d->node);
	return d;
}

void hp_drain_free_unused(struct hp_drain *d)
{
	kvfree(d);
}

static void hp_drain_work_fn(struct work_struct *work)
{
	struct hp_drain *d = container_of(to_delayed_work(work), struct hp_drain, work);
	bool holds_module;
	char busy[128];
	u64 inside;

	/* Every redirected call was counted by its pre-handler, and none has
	 * run since the detach: the sum says who is still inside. */
	hp_attachment_sync(&d->att);
	inside = hp_session_waiting(d->att.session, busy, sizeof(busy));
	WRITE_ONCE(d->inside, inside);
	if (inside) {
		/* Fails once hp_patcher is going: hp_exit then waits for us. */
		if (!d->holds_module)
			d->holds_module = try_module_get(THIS_MODULE);
		if (time_after_eq(jiffies, d->next_report)) {
			pr_info("detaching %s: waiting %lu s for %llu call%s still inside %s\n",
				d->name, (jiffies - d->started) / HZ, inside,
				inside == 1 ? "" : "s", busy);
			d->next_report = jiffies + HP_DRAIN_REPORT_SECS * HZ;
		}
		/* Every 5 ms at first, every 100 ms after a second. */
		queue_delayed_work(hp_wq, &d->work,
				   msecs_to_jiffies(time_after(jiffies, d->started + HZ) ?
						    HP_DRAIN_SLOW_POLL_MS : HP_DRAIN_POLL_MS));
		return;
	}
	/*
	 * A task may still be in our text: between its exit count and its
	 * `ret`, in hp_trampoline_jump before its jump, or preempted in
	 * hp_trampoline before its first hook. RCU-tasks waits for each to
	 * leave: none of them has switched voluntarily since.
	 */
	synchronize_rcu_tasks();
	hp_attachment_sync(&d->att);	/* the void calls' last events */
	holds_module = d->holds_module;
	hp_session_report(d->att.session, d->why, d->missed);
	hp_attachment_free(&d->att);
	mutex_lock(&hp_drains_mutex);
	spin_lock(&hp_drains_lock);
	list_del(&d->node);
	spin_unlock(&hp_drains_lock);
	mutex_unlock(&hp_drains_mutex);
	kvfree(d);
	wake_up_all(&hp_drained);
	/* hp_exit's destroy_workqueue waits for us to return from here. */
	if (holds_module)
		module_put(THIS_MODULE);
}

static void hp_check_text_restored(const char *name, const struct hp_attachment *att)
{
	const u8 *live = (const u8 *)(unsigned long)att->text_base;
	u64 i;

	for (i = 0; i < att->text_size; i++) {
		if (live[i] != att->text_copy[i]) {
			pr_err("%s text differs from before attach at %pS: %02x, was %02x\n",
			       name, live + i, live[i], att->text_copy[i]);
			return;
		}
	}
	pr_info("%s text identical to before attach (%llu bytes)\n",
		name, att->text_size);
}

/*
 * The first half, under hp_lock: disarm every site, keep the probes in
 * kprobes' table for a grace period (a CPU that fetched an int3 before the
 * restore must still find its probe: x86's kprobe_int3_handler has no
 * fallback for a vanished one since 6.2), unregister them as one batch,
 * and compare the text, which kprobes has now restored. The attachment
 * then becomes a drain, and att is left empty. Returns the drain's id, 0
 * when nothing was attached.
 */
u64 hp_attachment_detach(const char *name, struct hp_attachment *att, const char *why)
{
	struct hp_drain *d = att->drain;
	u64 missed = 0;
	unsigned int i;

	lockdep_assert_held(&hp_lock);
	if (!att->session)
		return 0;
	for (i = 0; i < att->nr_kprobes; i++)
		disable_kprobe(att->kprobes[i]);
	synchronize_rcu();
	unregister_kprobes(att->kprobes, att->nr_kprobes);
	/* No pre-handler runs now: the direct path's counts are final. */
	hp_attachment_sync(att);
	hp_check_text_restored(name, att);
	/* Hits kprobes did not hand to us (a probe hit inside another
	 * probe's handling): the real call ran unlogged, so report how many. */
	for (i = 0; i < att->nr_kprobes; i++)
		missed += att->kprobes[i]->nmissed;

	att->drain = NULL;
	d->att = *att;
	memset(att, 0, sizeof(*att));
	strscpy(d->name, name, sizeof(d->name));
	strscpy(d->why, why, sizeof(d->why));
	d->missed = missed;
	d->started = jiffies;
	d->next_report = jiffies + HP_DRAIN_REPORT_SECS * HZ;
	/*
	 * Callers inside already: take the reference now, so that an rmmod
	 * right after this is refused rather than left waiting for them in
	 * hp_exit (the work takes it too, for a caller counted later).
	 */
	d->holds_module = hp_session_inflight(d->att.session) && try_module_get(THIS_MODULE);
	INIT_DELAYED_WORK(&d->work, hp_drain_work_fn);
	mutex_lock(&hp_drains_mutex);
	spin_lock(&hp_drains_lock);
	d->id = ++hp_drain_last_id;
	list_add_tail(&d->node, &hp_drains);
	spin_unlock(&hp_drains_lock);
	mutex_unlock(&hp_drains_mutex);
	queue_delayed_work(hp_wq, &d->work, 0);
	return d->id;
}

/* The id the next drain will have. Drains begin under hp_lock only, so a
 * command holding it sees its own drains numbered from here on. */
u64 hp_drains_next_id(void)
{
	u64 next;

	lockdep_assert_held(&hp_lock);
	spin_lock(&hp_drains_lock);
	next = hp_drain_last_id + 1;
	spin_unlock(&hp_drains_lock);
	return next;
}

/* Whether a drain with an id in [from, to] is still waiting. */
static bool hp_drains_pending(u64 from, u64 to)
{
	struct hp_drain *d;
	bool pending = false;

	spin_lock(&hp_drains_lock);
	list_for_each_entry(d, &hp_drains, node)
		pending |= d->id >= from && d->id <= to;
	spin_unlock(&hp_drains_lock);
	return pending;
}

/*
 * Waits, with no lock held, until the drains [from, to] are done. A signal
 * ends the wait early (-EINTR): the drains go on in the background.
 * Sliced, so that a long wait is never reported as a hung task.
 */
int hp_drains_wait(u64 from, u64 to)
{
	if (!from)
		return 0;
	while (hp_drains_pending(from, to)) {
		long left = wait_event_interruptible_timeout(hp_drained,
							     !hp_drains_pending(from, to), 10 * HZ);

		if (left < 0)
			return -EINTR;
	}
	return 0;
}

/* For hp_exit: every drain, whoever started it. */
void hp_drains_wait_all(void)
{
	while (!wait_event_timeout(hp_drained, !hp_drains_pending(1, U64_MAX), 10 * HZ))
		;
}

/* `targets`: one line per drain. */
void hp_drains_reply(struct hp_reply *r)
{
	struct hp_drain *d;
	char line[200];

	mutex_lock(&hp_drains_mutex);
	list_for_each_entry(d, &hp_drains, node) {
		snprintf(line, sizeof(line), "detaching name=%s inside=%llu waited_ms=%u",
			 d->name, READ_ONCE(d->inside), jiffies_to_msecs(jiffies - d->started));
		hp_reply_line(r, line);
	}
	mutex_unlock(&hp_drains_mutex);
}

/* Callers inside the drains of `name` (for a command's reply). */
u64 hp_drains_inside(const char *name)
{
	struct hp_drain *d;
	u64 inside = 0;

	spin_lock(&hp_drains_lock);
	list_for_each_entry(d, &hp_drains, node)
		if (!strcmp(d->name, name))
			inside += READ_ONCE(d->inside);
	spin_unlock(&hp_drains_lock);
	return inside;
}
