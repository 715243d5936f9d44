// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_arm64_onereg - save and restore of an armed arm64 timer through ONE_REG
 *
 * What a VMM does to move a vCPU (live migration), for the virtual timer
 * (KVM_REG_ARM_TIMER_CTL, _CVAL, _CNT) and the physical timer
 * (KVM_REG_ARM_PTIMER_CTL, _CVAL, _CNT):
 *
 *  - save: the guest arms the timer DELAY_MS ahead, its interrupt unmasked,
 *    and stops.  The VMM reads CTL, CVAL and CNT: CVAL is the guest's, CTL
 *    is enabled and unmasked with an ISTATUS that agrees with CNT and CVAL,
 *    and CNT has not gone back from the guest's last reading.  Then the VM
 *    is destroyed with its timer armed.
 *  - restore: a new VM's vCPU gets the three registers, in register-id
 *    order as a VMM walking KVM_GET_REG_LIST writes them (virtual timer:
 *    CVAL, CTL, CNT; physical timer: CNT, CTL, CVAL), and they read back as
 *    written.  The guest's counter goes on from the saved CNT, ISTATUS is
 *    clear as the guest starts, and the guest takes exactly one interrupt,
 *    with the counter at or past CVAL.
 *  - restore with a CVAL behind the saved CNT: ISTATUS is set as the guest
 *    starts and the interrupt comes without a new deadline; again exactly
 *    one.
 *
 * With -r, instead: a CTL write with a RES0 bit set (any bit but ENABLE,
 * IMASK and ISTATUS) fails with EINVAL and changes nothing, while every
 * value of the three defined bits is accepted (ISTATUS, read-only, is
 * ignored).
 *
 * With -d, instead: a put while the timer is due.  The guest programs a
 * CVAL in the past (half its counter: past in any view of the counter),
 * with the interrupt masked at the timer, then unmasked, and each time
 * returns to userspace with the timer due.  Userspace reads the guest's
 * CVAL through ONE_REG, and CTL with ISTATUS set; back in the guest, CVAL
 * is still its own, and the interrupt comes (after the guest unmasks it,
 * for the masked one), once.  Without and with a counter offset
 * (KVM_ARM_SET_COUNTER_OFFSET): with one, KVM's VHE world switch leaves
 * the hardware CNTP_CVAL at 0 for a due physical timer where the CPU has
 * CNTPOFF, and only the vCPU's saved register has the guest's value.
 *
 * -v or -p: the virtual or the physical timer only (default: both).
 */
#include <getopt.h>

#include "kvt_arm64_timer.h"

/*
 * How far ahead the guest arms its timer; also the margin the VMM's restore
 * (a few ioctls) has before the restored deadline passes.
 */
#define DELAY_MS	1000
/* How long the guest watches for a second interrupt after the first. */
#define QUIET_MS	10

/* Set by the host, as is the timer (kvt_guest_timer). */
static u64 guest_saved_cnt;
static u64 guest_restored_cval;
static bool guest_past;
/* Set by the guest as it arms the timer. */
static u64 guest_armed_cnt;
static u64 guest_armed_cval;
static u64 guest_armed_ctl;

struct timer_regs {
	u64 ctl;
	u64 cval;
	u64 cnt;
};

struct reg_write {
	u64 id;
	u64 val;
};

static void guest_arm(void)
{
	enum arch_timer timer = kvt_guest_timer;
	u64 now, cval;

	kvt_guest_timer_init();
	now = timer_get_cntct(timer);
	cval = now + msec_to_cycles(DELAY_MS);
	kvt_guest_arm(timer, cval);
	WRITE_ONCE(guest_armed_cval, cval);
	WRITE_ONCE(guest_armed_cnt, timer_get_cntct(timer));
	GUEST_SYNC(0);
	GUEST_FAIL("the armed VM must not run again");
}

/* Exactly @n interrupts: none for QUIET_MS after the last. */
static void guest_check_irqs(enum arch_timer timer, u64 n)
{
	kvt_guest_spin_ms(timer, QUIET_MS);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].count), n);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[!timer].count), 0);
}

static void guest_restored(void)
{
	enum arch_timer timer = kvt_guest_timer;
	u64 start = timer_get_cntct(timer);
	u64 cval = guest_restored_cval;
	bool due;

	kvt_guest_timer_init();
	__GUEST_ASSERT(start >= guest_saved_cnt,
		       "%s counter 0x%lx on entry, behind the restored CNT 0x%lx",
		       kvt_timer_name(timer), start, guest_saved_cnt);
	GUEST_ASSERT_EQ(timer_get_cval(timer), cval);
	GUEST_ASSERT_EQ(timer_get_ctl(timer) & (CTL_ENABLE | CTL_IMASK), CTL_ENABLE);

	due = kvt_guest_check_istatus(timer);
	if (guest_past)
		__GUEST_ASSERT(due, "CVAL 0x%lx restored behind CNT 0x%lx: ISTATUS clear",
			       cval, guest_saved_cnt);
	else
		__GUEST_ASSERT(!due && start < cval,
			       "restored deadline 0x%lx passed before the guest ran (0x%lx)",
			       cval, start);

	kvt_guest_wait_irqs(timer, 1);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
	guest_check_irqs(timer, 1);
	GUEST_DONE();
}

/*
 * -d: program a past CVAL, masked (IMASK) then unmasked, and stop with the
 * timer due; once back, the interrupt comes.
 */
static void guest_due(void)
{
	enum arch_timer timer = kvt_guest_timer;
	u64 ctl, cval;

	kvt_guest_timer_init();
	for (int i = 0; i < 2; i++) {
		ctl = i ? CTL_ENABLE : CTL_ENABLE | CTL_IMASK;
		cval = timer_get_cntct(timer) / 2 + i;
		timer_set_cval(timer, cval);
		timer_set_ctl(timer, ctl);
		isb();
		__GUEST_ASSERT(kvt_guest_check_istatus(timer),
			       "%s timer: CVAL 0x%lx in the past, ISTATUS clear",
			       kvt_timer_name(timer), cval);
		WRITE_ONCE(guest_armed_cval, cval);
		WRITE_ONCE(guest_armed_ctl, ctl);
		GUEST_SYNC(i);

		GUEST_ASSERT_EQ(timer_get_cval(timer), cval);
		__GUEST_ASSERT(kvt_guest_check_istatus(timer),
			       "%s timer: due before the exit, ISTATUS clear after it",
			       kvt_timer_name(timer));
		if (ctl & CTL_IMASK)
			timer_set_ctl(timer, CTL_ENABLE);
		kvt_guest_wait_irqs(timer, i + 1);
		GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
	}
	guest_check_irqs(timer, 2);
	GUEST_DONE();
}

/* -d: a put while @timer is due; @offset: with a VM counter offset. */
static void test_put_due(enum arch_timer timer, bool offset)
{
	const char *what = offset ? "due at put, counter offset" : "due at put";
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	u64 ctl, cval, cnt;

	vm = kvt_timer_vm_create_for(&vcpu, guest_due, timer);
	/* The guest's counters half the host's: cval + offset does not wrap. */
	if (offset)
		kvt_set_counter_offset(vm, kvt_host_counter() / 2);

	for (int i = 0; i < 2; i++) {
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_SYNC);
		TEST_ASSERT_EQ(uc.args[1], i);
		sync_global_from_guest(vm, guest_armed_cval);
		sync_global_from_guest(vm, guest_armed_ctl);
		cval = kvt_get_reg(vcpu, kvt_reg_cval(timer));
		ctl = kvt_get_reg(vcpu, kvt_reg_ctl(timer));
		cnt = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
		TEST_ASSERT(cval == guest_armed_cval,
			    "%s timer, %s: ONE_REG CVAL 0x%lx, the guest's is 0x%lx",
			    kvt_timer_name(timer), what, cval, guest_armed_cval);
		TEST_ASSERT(ctl == (guest_armed_ctl | CTL_ISTATUS),
			    "%s timer, %s: ONE_REG CTL 0x%lx, want 0x%lx",
			    kvt_timer_name(timer), what, ctl, guest_armed_ctl | CTL_ISTATUS);
		TEST_ASSERT(cnt >= cval, "%s timer, %s: CNT 0x%lx behind CVAL 0x%lx",
			    kvt_timer_name(timer), what, cnt, cval);
	}
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_DONE);
	ksft_print_msg("%s timer, %s: CVAL kept, masked and unmasked; two interrupts\n",
		       kvt_timer_name(timer), what);
	kvt_timer_vm_free(vm);
}

/* Arm @timer in a VM, read its registers as a VMM saves them, destroy the VM. */
static struct timer_regs save_armed(enum arch_timer timer)
{
	u64 cnt_before, cnt_after;
	struct timer_regs regs;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	vm = kvt_timer_vm_create_for(&vcpu, guest_arm, timer);
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "arming"), UCALL_SYNC);
	sync_global_from_guest(vm, guest_armed_cnt);
	sync_global_from_guest(vm, guest_armed_cval);

	cnt_before = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
	regs.ctl = kvt_get_reg(vcpu, kvt_reg_ctl(timer));
	cnt_after = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
	regs.cval = kvt_get_reg(vcpu, kvt_reg_cval(timer));
	regs.cnt = cnt_after;

	TEST_ASSERT_EQ(regs.cval, guest_armed_cval);
	TEST_ASSERT(!(regs.ctl & ~(u64)KVT_CTL_MASK), "CTL 0x%lx has RES0 bits", regs.ctl);
	TEST_ASSERT_EQ(regs.ctl & (CTL_ENABLE | CTL_IMASK), CTL_ENABLE);
	TEST_ASSERT(cnt_before >= guest_armed_cnt,
		    "CNT 0x%lx behind the guest's last reading 0x%lx", cnt_before, guest_armed_cnt);
	TEST_ASSERT(cnt_after >= cnt_before, "CNT went back: 0x%lx then 0x%lx",
		    cnt_before, cnt_after);
	if (regs.ctl & CTL_ISTATUS)
		TEST_ASSERT(cnt_after >= regs.cval, "ISTATUS set, CNT 0x%lx < CVAL 0x%lx",
			    cnt_after, regs.cval);
	else
		TEST_ASSERT(cnt_before < regs.cval, "ISTATUS clear, CNT 0x%lx >= CVAL 0x%lx",
			    cnt_before, regs.cval);

	kvt_timer_vm_free(vm);
	return regs;
}

/* Restore @saved into a new VM, with CVAL @cval, and let the guest check it. */
static void restore_and_run(enum arch_timer timer, struct timer_regs saved, u64 cval,
			    bool past)
{
	struct reg_write w[] = {
		{ kvt_reg_ctl(timer), saved.ctl },
		{ kvt_reg_cval(timer), cval },
		{ kvt_reg_cnt(timer), saved.cnt },
	};
	struct reg_write tmp;
	const char *what = past ? "past deadline restored" : "deadline restored";
	struct kvt_timer_irqs irqs;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	u64 ctl;

	vm = kvt_timer_vm_create_for(&vcpu, guest_restored, timer);
	guest_saved_cnt = saved.cnt;
	guest_restored_cval = cval;
	guest_past = past;
	sync_global_to_guest(vm, guest_saved_cnt);
	sync_global_to_guest(vm, guest_restored_cval);
	sync_global_to_guest(vm, guest_past);

	/* In register-id order: a VMM writes what KVM_GET_REG_LIST lists. */
	for (int i = 0; i < ARRAY_SIZE(w); i++) {
		int min = i;

		for (int j = i + 1; j < ARRAY_SIZE(w); j++)
			if (w[j].id < w[min].id)
				min = j;
		tmp = w[i];
		w[i] = w[min];
		w[min] = tmp;
		vcpu_set_reg(vcpu, w[i].id, w[i].val);
	}

	TEST_ASSERT_EQ(kvt_get_reg(vcpu, kvt_reg_cval(timer)), cval);
	ctl = kvt_get_reg(vcpu, kvt_reg_ctl(timer));
	TEST_ASSERT_EQ(ctl & (CTL_ENABLE | CTL_IMASK), saved.ctl & (CTL_ENABLE | CTL_IMASK));
	TEST_ASSERT(kvt_get_reg(vcpu, kvt_reg_cnt(timer)) >= saved.cnt,
		    "CNT reads behind the 0x%lx restored", saved.cnt);

	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_DONE);
	irqs = kvt_read_irqs(vm, timer);
	ksft_print_msg("%s timer, %s: one interrupt, %lu ticks after CVAL\n",
		       kvt_timer_name(timer), what, irqs.cnt - irqs.cval);
	kvt_timer_vm_free(vm);
}

static void test_save_restore(enum arch_timer timer)
{
	struct timer_regs saved = save_armed(timer);

	restore_and_run(timer, saved, saved.cval, false);
	restore_and_run(timer, saved, saved.cnt - 1, true);
}

/* CTL: the defined bits are accepted, a RES0 bit is -EINVAL and ignored. */
static void test_ctl_res0(enum arch_timer timer)
{
	static const int res0_bits[] = { 3, 4, 8, 31, 32, 63 };
	u64 id = kvt_reg_ctl(timer);
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	u64 ctl, val;
	int ret;

	/* A vCPU that has run, with the timer armed. */
	vm = kvt_timer_vm_create_for(&vcpu, guest_arm, timer);
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "arming"), UCALL_SYNC);

	for (val = 0; val <= KVT_CTL_MASK; val++) {
		ret = __vcpu_set_reg(vcpu, id, val);
		TEST_ASSERT(!ret, "%s CTL 0x%lx: errno %d", kvt_timer_name(timer), val, errno);
		ctl = kvt_get_reg(vcpu, id);
		TEST_ASSERT(!(ctl & ~(u64)KVT_CTL_MASK) &&
			    (ctl & (CTL_ENABLE | CTL_IMASK)) == (val & (CTL_ENABLE | CTL_IMASK)),
			    "%s CTL 0x%lx after writing 0x%lx", kvt_timer_name(timer), ctl, val);
	}

	vcpu_set_reg(vcpu, id, CTL_ENABLE);
	for (int i = 0; i < ARRAY_SIZE(res0_bits); i++) {
		val = CTL_ENABLE | BIT_ULL(res0_bits[i]);
		ret = __vcpu_set_reg(vcpu, id, val);
		TEST_ASSERT(ret == -1 && errno == EINVAL,
			    "%s CTL 0x%lx (RES0 bit %d): ret %d errno %d, want EINVAL",
			    kvt_timer_name(timer), val, res0_bits[i], ret, errno);
		ctl = kvt_get_reg(vcpu, id);
		TEST_ASSERT(!(ctl & ~(u64)KVT_CTL_MASK) &&
			    (ctl & (CTL_ENABLE | CTL_IMASK)) == CTL_ENABLE,
			    "%s CTL 0x%lx after the refused write of 0x%lx",
			    kvt_timer_name(timer), ctl, val);
	}
	ksft_print_msg("%s timer: CTL RES0 bits refused\n", kvt_timer_name(timer));
	kvt_timer_vm_free(vm);
}

static void help(const char *name)
{
	pr_info("usage: %s [-v | -p] [-r | -d]\n", name);
	pr_info("  -v  the virtual timer only\n");
	pr_info("  -p  the physical timer only\n");
	pr_info("  -r  CTL RES0 checks instead of save/restore\n");
	pr_info("  -d  a put while the timer is due, instead of save/restore\n");
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	bool test[KVT_NR_TIMERS] = { true, true };
	bool res0 = false, due = false;
	int opt;

	while ((opt = getopt(argc, argv, "vprd")) != -1) {
		switch (opt) {
		case 'v':
			test[PHYSICAL] = false;
			break;
		case 'p':
			test[VIRTUAL] = false;
			break;
		case 'r':
			res0 = true;
			break;
		case 'd':
			due = true;
			break;
		default:
			help(argv[0]);
		}
	}
	if ((!test[VIRTUAL] && !test[PHYSICAL]) || (res0 && due))
		help(argv[0]);
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_ONE_REG));
	if (due)
		TEST_REQUIRE(kvm_has_cap(KVM_CAP_COUNTER_OFFSET));

	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		if (!test[t])
			continue;
		if (res0) {
			test_ctl_res0(t);
		} else if (due) {
			test_put_due(t, false);
			test_put_due(t, true);
		} else {
			test_save_restore(t);
		}
	}
	return 0;
}
