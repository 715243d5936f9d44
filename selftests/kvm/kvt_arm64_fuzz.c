// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_arm64_fuzz - hostile input to the arm64 vCPU timers
 *
 * A fixed number of random and boundary requests (the seed makes a run
 * reproducible), each checked against the answer KVM defines.  A request
 * may fail only with an errno that one of its faults calls for (several
 * faults: any of theirs); every other answer fails the test, and so does
 * an errno no fault explains (an EFAULT or ENOMEM on valid arguments).
 *
 *  1. Timer attributes (KVM_ARM_VCPU_TIMER_CTRL), in -a VMs: SET, GET and
 *     HAS of KVM_ARM_VCPU_TIMER_IRQ_{VTIMER,PTIMER,HVTIMER,HPTIMER} and of
 *     unknown attributes, with PPIs and other numbers, some through a bad
 *     address.  Before the VM has a vGIC a SET is -EINVAL; an unknown
 *     attribute is -ENXIO, a number that is not a PPI -EINVAL, a bad
 *     address -EFAULT; GET reads what SET wrote.  Then each VM gets the
 *     virtual and the physical timer on two PPIs, the same one in every
 *     other VM: then the first KVM_RUN is -EINVAL and the PPIs stay
 *     writable; else the guest takes one interrupt of each timer on its
 *     new PPI, and the PPIs are fixed (-EBUSY).
 *  2. ONE_REG (-i requests): GET or SET of KVM_REG_ARM_TIMER_{CTL,CNT,CVAL}
 *     and KVM_REG_ARM_PTIMER_*, mostly 64 bits wide, else of any other
 *     size (-ENOENT), with boundary and random values, some through a bad
 *     address (-EFAULT).  CTL with a RES0 bit is -EINVAL with kvm_vtimer
 *     (the in-tree timer keeps the bits: counted).  CVAL reads back as
 *     written, CTL's ENABLE and IMASK as written, and CNT what was written
 *     plus the time since.  After each request the timer's CTL.ISTATUS
 *     agrees with CNT and CVAL.  The vCPU runs every RUN_EVERY requests
 *     (with its interrupts masked: the VMM's values may be anything).
 *  3. KVM_ARM_SET_COUNTER_OFFSET (-o requests), random offsets among
 *     ONE_REG requests: a nonzero reserved field is -EINVAL, a bad address
 *     -EFAULT; both counters then read the host's minus the offset, and a
 *     CNT write changes nothing.  Then the offset goes back to 0.
 *  4. The guest (-g writes) writes any value to CNTV_CTL, CNTV_CVAL,
 *     CNTV_TVAL and CNTP_*, with interrupts masked, and checks each: CVAL
 *     reads back as written, TVAL sets CVAL to the counter plus its
 *     sign-extended low 32 bits, CTL's ENABLE and IMASK read back as
 *     written, and an enabled timer's ISTATUS agrees with the counter and
 *     CVAL.  Every GUEST_UNMASK_EVERY writes it has the vGIC resample both
 *     lines and unmasks interrupts: one taken must find its timer's
 *     condition met.  Every GUEST_SYNC_EVERY writes it stops: the VMM's
 *     ONE_REG view must be the guest's, then the VMM writes CVAL or CTL,
 *     and the guest must read what it wrote.
 *  5. Afterwards the VM is still usable: NR_DEADLINES deadlines spinning
 *     and as many in WFI on each timer, one interrupt each, none early.
 *
 *   kvt_arm64_fuzz [-a ATTR_VMS] [-i ONE_REG_REQUESTS] [-o OFFSET_REQUESTS]
 *                  [-g GUEST_WRITES] [-s SEED]
 */
#include "kvt_arm64_timer.h"

/* Run the vCPU after this many ONE_REG requests. */
#define RUN_EVERY		32
/* A read of CNT is what was written plus at most this (about 5 h). */
#define CNT_SLACK		BIT_ULL(40)
/* Attribute requests per VM, before and after it has a vGIC. */
#define ATTR_OPS_NO_VGIC	8
#define ATTR_OPS		32
#define GUEST_UNMASK_EVERY	8
#define GUEST_SYNC_EVERY	64
#define NR_DEADLINES		5
#define PERIOD_MS		2
/* How long the guest watches for a second interrupt after each. */
#define QUIET_MS		2
/* The first page: never mapped in a process. */
#define BAD_ADDR		8ULL

enum { STAGE_IDLE = 1, STAGE_GUEST, STAGE_FUZZED };
enum { REG_CTL, REG_CNT, REG_CVAL, REG_TVAL };

struct timer_view {
	u64 ctl;	/* ENABLE and IMASK */
	u64 cval;
};

/* Shared with the guest. */
static bool guest_go;
static u64 guest_writes = 10000;
static u64 guest_seed;
/* What the guest had at its last stop, and what the VMM wrote then. */
static struct timer_view guest_seen[KVT_NR_TIMERS];
static struct timer_view host_wrote[KVT_NR_TIMERS];
/* BIT(2 * timer) for CTL, BIT(2 * timer + 1) for CVAL. */
static u64 host_wrote_mask;

struct counts {
	u64 requests, ok, einval, enoent, efault, enxio, ebusy;
	u64 res0_kept;		/* in-tree: CTL writes with RES0 bits taken */
	u64 stale_istatus;	/* in-tree: ISTATUS read set before CVAL */
	u64 wrapped;		/* checks the counter's wrap cut short */
};

static void count(struct counts *c, int err)
{
	c->requests++;
	c->ok += !err;
	c->einval += err == EINVAL;
	c->enoent += err == ENOENT;
	c->efault += err == EFAULT;
	c->enxio += err == ENXIO;
	c->ebusy += err == EBUSY;
}

/*
 * The answer @ret (errno @err) to a request: success if @faults (a mask
 * of BIT_ULL(errno)) is 0, else one of those errnos.
 */
static void check_answer(const char *what, u64 arg, u64 val, int ret, int err, u64 faults)
{
	TEST_ASSERT(ret == 0 || ret == -1, "%s 0x%lx: ret %d", what, arg, ret);
	if (!faults)
		TEST_ASSERT(!ret, "%s 0x%lx value 0x%lx: %s, want success", what, arg, val,
			    strerror(err));
	else
		TEST_ASSERT(ret && err < 64 && (faults & BIT_ULL(err)),
			    "%s 0x%lx value 0x%lx: %s, want an errno of mask 0x%lx", what, arg,
			    val, ret ? strerror(err) : "success", faults);
}

/* Guest: write @val to @reg of @timer, all 64 bits of it. */
static void guest_write(enum arch_timer timer, int reg, u64 val)
{
	if (timer == VIRTUAL) {
		if (reg == REG_CTL)
			write_sysreg(val, cntv_ctl_el0);
		else if (reg == REG_CVAL)
			write_sysreg(val, cntv_cval_el0);
		else
			write_sysreg(val, cntv_tval_el0);
	} else {
		if (reg == REG_CTL)
			write_sysreg(val, cntp_ctl_el0);
		else if (reg == REG_CVAL)
			write_sysreg(val, cntp_cval_el0);
		else
			write_sysreg(val, cntp_tval_el0);
	}
	isb();
}

/*
 * Guest: an enabled timer's ISTATUS agrees with its counter and CVAL.  A
 * disabled one's is UNKNOWN (QEMU clears it; KVM's emulation sets it).
 */
static void guest_check_timer(enum arch_timer timer)
{
	if (timer_get_ctl(timer) & CTL_ENABLE)
		kvt_guest_check_istatus(timer);
}

/*
 * Guest: an enabled timer's TVAL reads as CVAL minus the counter, low 32
 * bits (a disabled one's is UNKNOWN).
 */
static void guest_check_tval(enum arch_timer timer)
{
	u64 before, after, cval = timer_get_cval(timer);
	u32 tval;

	if (!(timer_get_ctl(timer) & CTL_ENABLE))
		return;
	before = timer_get_cntct(timer);
	tval = timer_get_tval(timer);
	after = timer_get_cntct(timer);
	__GUEST_ASSERT((u32)(cval - before - tval) <= after - before,
		       "%s timer: TVAL 0x%x, CVAL 0x%lx, counter 0x%lx..0x%lx",
		       kvt_timer_name(timer), tval, cval, before, after);
}

/* Guest: one write of any value to CTL, CVAL or TVAL, and its checks. */
static void guest_write_one(u64 *s)
{
	static const int regs[] = { REG_CTL, REG_CVAL, REG_TVAL };
	u64 r = kvt_xorshift(s);
	enum arch_timer timer = r & 1 ? PHYSICAL : VIRTUAL;
	int reg = regs[(r >> 1) % 3];
	u64 before = timer_get_cntct(timer), after, val, cval;

	/* CTL: its defined bits and one RES0 bit, or anything. */
	if (reg == REG_CTL && (r >> 8) & 1)
		val = (r >> 9) & 0xf;
	else
		val = kvt_hostile_value(s, before);
	guest_write(timer, reg, val);
	after = timer_get_cntct(timer);

	switch (reg) {
	case REG_CTL:
		__GUEST_ASSERT((timer_get_ctl(timer) & (CTL_ENABLE | CTL_IMASK)) ==
			       (val & (CTL_ENABLE | CTL_IMASK)),
			       "%s CTL 0x%x after writing 0x%lx", kvt_timer_name(timer),
			       timer_get_ctl(timer), val);
		break;
	case REG_CVAL:
		cval = timer_get_cval(timer);
		__GUEST_ASSERT(cval == val, "%s CVAL 0x%lx after writing 0x%lx",
			       kvt_timer_name(timer), cval, val);
		break;
	default:
		cval = timer_get_cval(timer);
		__GUEST_ASSERT(cval - (u64)(s64)(s32)val - before <= after - before,
			       "%s TVAL 0x%lx written at counter 0x%lx..0x%lx: CVAL 0x%lx",
			       kvt_timer_name(timer), val, before, after, cval);
		guest_check_tval(timer);
	}
	guest_check_timer(timer);
}

/* Guest: stop; the VMM compares its view, and may write CTL or CVAL. */
static void guest_sync_regs(void)
{
	u64 mask;

	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		WRITE_ONCE(guest_seen[t].ctl, timer_get_ctl(t) & (CTL_ENABLE | CTL_IMASK));
		WRITE_ONCE(guest_seen[t].cval, timer_get_cval(t));
	}
	GUEST_SYNC(STAGE_GUEST);
	mask = READ_ONCE(host_wrote_mask);
	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		if (mask & BIT_ULL(2 * t))
			__GUEST_ASSERT((timer_get_ctl(t) & (CTL_ENABLE | CTL_IMASK)) ==
				       (host_wrote[t].ctl & (CTL_ENABLE | CTL_IMASK)),
				       "%s CTL 0x%x, the VMM wrote 0x%lx", kvt_timer_name(t),
				       timer_get_ctl(t), host_wrote[t].ctl);
		if (mask & BIT_ULL(2 * t + 1))
			__GUEST_ASSERT(timer_get_cval(t) == host_wrote[t].cval,
				       "%s CVAL 0x%lx, the VMM wrote 0x%lx", kvt_timer_name(t),
				       timer_get_cval(t), host_wrote[t].cval);
		guest_check_timer(t);
	}
}

/* Guest: both timers off, and no interrupt of theirs left pending. */
static void guest_disarm(void)
{
	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		timer_set_ctl(t, 0);
		kvt_guest_resample(t);
	}
}

static void guest_fuzz(void)
{
	u64 s = guest_seed * 2 + 1;	/* odd: never 0 */

	for (u64 i = 1; i <= guest_writes; i++) {
		guest_write_one(&s);
		if (i % GUEST_UNMASK_EVERY == 0) {
			for (int t = VIRTUAL; t <= PHYSICAL; t++)
				kvt_guest_resample(t);
			local_irq_enable();
			isb();
			local_irq_disable();
		}
		if (i % GUEST_SYNC_EVERY == 0)
			guest_sync_regs();
	}
}

/* One interrupt per deadline, none early, spinning or in WFI. */
static void guest_deadlines(enum arch_timer timer)
{
	for (int i = 0; i < 2 * NR_DEADLINES; i++) {
		u64 n = READ_ONCE(kvt_irqs[timer].count) + 1;
		u64 cval = timer_get_cntct(timer) + msec_to_cycles(PERIOD_MS);

		kvt_guest_arm(timer, cval);
		if (i & 1) {
			kvt_guest_wait_irqs(timer, n);
		} else {
			local_irq_enable();
			while (READ_ONCE(kvt_irqs[timer].count) < n)
				cpu_relax();
			local_irq_disable();
		}
		GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
		kvt_guest_spin_ms(timer, QUIET_MS);
		GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].count), n);
	}
}

static void guest_code(void)
{
	u64 other;

	kvt_guest_timer_init();
	/* Idle, interrupts masked, while the VMM fuzzes: it may arm anything. */
	while (!READ_ONCE(guest_go))
		GUEST_SYNC(STAGE_IDLE);
	/* The VMM turned both timers off; drop what they had pending. */
	guest_disarm();

	guest_fuzz();
	guest_disarm();
	GUEST_SYNC(STAGE_FUZZED);

	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		other = READ_ONCE(kvt_irqs[!t].count);
		guest_deadlines(t);
		GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[!t].count), other);
	}
	GUEST_DONE();
}

/* The attributes' VMs: an interrupt of each timer, on its PPIs. */
static void guest_attr_code(void)
{
	kvt_guest_timer_init();
	kvt_guest_first_irq(VIRTUAL, 1);
	kvt_guest_first_irq(PHYSICAL, 1);
	GUEST_DONE();
}

/* What the VMM knows of a VM's timer PPIs (KVM_ARM_VCPU_TIMER_IRQ_*). */
struct attr_model {
	int ppi[4];
	bool vgic;		/* the VM has its in-kernel irqchip */
	bool fixed;		/* its first KVM_RUN succeeded */
};

/* One SET, GET or HAS of a timer attribute; @m follows. */
static void attr_request(struct kvm_vcpu *vcpu, u64 *s, struct attr_model *m, struct counts *c)
{
	static const char * const ops[] = { "SET_DEVICE_ATTR", "GET_DEVICE_ATTR",
					    "HAS_DEVICE_ATTR" };
	u64 r = kvt_xorshift(s);
	int op = r % 3, buf, val, ret, err;
	u64 attr, faults = 0;
	bool bad = (r >> 24) % 32 == 0;
	void *addr = bad ? (void *)BAD_ADDR : &buf;

	if ((r >> 2) % 8)
		attr = (r >> 5) % 4;
	else
		attr = (r >> 5) % 2 ? 4 + (r >> 6) % 4 : kvt_xorshift(s);
	val = (r >> 12) % 4 ? MIN_PPI + (r >> 16) % 16 : (int)kvt_hostile_value(s, MIN_PPI);
	buf = val;
	if (op == 0)
		ret = __vcpu_device_attr_set(vcpu, KVM_ARM_VCPU_TIMER_CTRL, attr, addr);
	else if (op == 1)
		ret = __vcpu_device_attr_get(vcpu, KVM_ARM_VCPU_TIMER_CTRL, attr, addr);
	else
		ret = __vcpu_has_device_attr(vcpu, KVM_ARM_VCPU_TIMER_CTRL, attr);
	err = ret ? errno : 0;

	if (attr >= 4)
		faults |= BIT_ULL(ENXIO);
	if (op == 0) {
		if (!m->vgic || !INTID_IS_PPI(val))
			faults |= BIT_ULL(EINVAL);
		if (m->fixed)
			faults |= BIT_ULL(EBUSY);
	}
	if (bad && op != 2)
		faults |= BIT_ULL(EFAULT);
	check_answer(ops[op], attr, val, ret, err, faults);
	count(c, err);

	if (ret)
		return;
	if (op == 0)
		m->ppi[attr] = val;
	else if (op == 1)
		TEST_ASSERT(buf == m->ppi[attr], "timer attribute %lu reads %d, was set to %d",
			    attr, buf, m->ppi[attr]);
}

static void set_ppi(struct kvm_vcpu *vcpu, struct attr_model *m, u64 attr, int ppi)
{
	vcpu_device_attr_set(vcpu, KVM_ARM_VCPU_TIMER_CTRL, attr, &ppi);
	m->ppi[attr] = ppi;
}

/*
 * Phase 1, VM @k: fuzz the attributes, then give the timers two PPIs, the
 * same one if @k is odd, and run.
 */
static void fuzz_attrs(u64 k, u64 *s, struct counts *c)
{
	struct attr_model m = {};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	int vppi, pppi, ret, err, spare = MIN_PPI;

	vm = vm_create_with_one_vcpu(&vcpu, guest_attr_code);
	for (int i = 0; i < 4; i++)
		vcpu_device_attr_get(vcpu, KVM_ARM_VCPU_TIMER_CTRL, i, &m.ppi[i]);
	for (int i = 0; i < ATTR_OPS_NO_VGIC; i++)
		attr_request(vcpu, s, &m, c);

	kvt_timer_vm_setup(vm, &vcpu, 1, kvt_guest_irq_handler);
	m.vgic = true;
	for (int i = 0; i < ATTR_OPS; i++)
		attr_request(vcpu, s, &m, c);

	vppi = MIN_PPI + kvt_xorshift(s) % 16;
	pppi = k & 1 ? vppi : MIN_PPI + (vppi - MIN_PPI + 1 + kvt_xorshift(s) % 15) % 16;
	set_ppi(vcpu, &m, KVM_ARM_VCPU_TIMER_IRQ_VTIMER, vppi);
	set_ppi(vcpu, &m, KVM_ARM_VCPU_TIMER_IRQ_PTIMER, pppi);
	kvt_sync_timer_intids(vm, vcpu);
	TEST_ASSERT(kvt_timer_intid[VIRTUAL] == vppi && kvt_timer_intid[PHYSICAL] == pppi,
		    "timer PPIs read %u and %u, set to %d and %d", kvt_timer_intid[VIRTUAL],
		    kvt_timer_intid[PHYSICAL], vppi, pppi);

	if (vppi == pppi) {
		ret = __vcpu_run(vcpu);
		err = errno;
		TEST_ASSERT(ret == -1 && err == EINVAL,
			    "first KVM_RUN with both timers on PPI %d: ret %d, %s, want EINVAL",
			    vppi, ret, strerror(err));
		/* Not run: still open to a fix. */
		set_ppi(vcpu, &m, KVM_ARM_VCPU_TIMER_IRQ_PTIMER, vppi == spare ? spare + 1 : spare);
	} else {
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "timers on fuzzed PPIs"),
			       UCALL_DONE);
		m.fixed = true;
		ret = __vcpu_device_attr_set(vcpu, KVM_ARM_VCPU_TIMER_CTRL,
					     KVM_ARM_VCPU_TIMER_IRQ_VTIMER, &spare);
		err = errno;
		TEST_ASSERT(ret == -1 && err == EBUSY,
			    "timer PPI set after the first KVM_RUN: ret %d, %s, want EBUSY",
			    ret, strerror(err));
	}
	for (int i = 0; i < ATTR_OPS; i++)
		attr_request(vcpu, s, &m, c);
	kvt_timer_vm_free(vm);
}

/*
 * Host: @timer's CTL.ISTATUS agrees with CNT and CVAL (whether enabled or
 * not, as KVM has always reported it), and with kvm_vtimer CTL has no
 * RES0 bit.  The in-tree timer ORs the condition into the CTL it saved at
 * the last vCPU put, ISTATUS included (read_timer_ctl()): once a CVAL or
 * CNT write ends the condition, ISTATUS still reads set.  That is counted
 * in @c, not failed.
 */
static void check_timer(struct kvm_vcpu *vcpu, enum arch_timer timer, bool ours,
			struct counts *c)
{
	u64 before = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
	u64 ctl = kvt_get_reg(vcpu, kvt_reg_ctl(timer));
	u64 after = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
	u64 cval = kvt_get_reg(vcpu, kvt_reg_cval(timer));

	if (ours)
		TEST_ASSERT(!(ctl & ~(u64)KVT_CTL_MASK), "%s timer: CTL 0x%lx has RES0 bits",
			    kvt_timer_name(timer), ctl);
	/*
	 * A counter the fuzz moved next to its end can wrap between the
	 * reads (a few hundred ticks are a few us): then CTL may have been
	 * read on either side of the wrap, and neither bound holds.
	 */
	if (after < before) {
		c->wrapped++;
		return;
	}
	if ((ctl & CTL_ISTATUS) && !ours && after < cval)
		c->stale_istatus++;
	else if (ctl & CTL_ISTATUS)
		TEST_ASSERT(after >= cval, "%s timer: ISTATUS set, CNT 0x%lx < CVAL 0x%lx",
			    kvt_timer_name(timer), after, cval);
	else
		TEST_ASSERT(before < cval, "%s timer: ISTATUS clear, CNT 0x%lx >= CVAL 0x%lx",
			    kvt_timer_name(timer), before, cval);
}

/* The VM's counter offset, once the VMM has fixed it (phase 3). */
struct offset_state {
	bool fixed;
	u64 offset;
};

/* Room for the largest size a register id can name (1 << 15 bytes). */
static u8 reg_buf[1 << 15] __aligned(8);

/* One ONE_REG request on a timer register (phases 2 and 3). */
static void onereg_request(struct kvm_vcpu *vcpu, u64 *s, const struct offset_state *o,
			   struct counts *c)
{
	static const int regs[] = { REG_CTL, REG_CNT, REG_CVAL };
	u64 r = kvt_xorshift(s);
	enum arch_timer timer = r & 1 ? PHYSICAL : VIRTUAL;
	int reg = regs[(r >> 1) % 3];
	u64 id = reg == REG_CTL ? kvt_reg_ctl(timer) :
		 reg == REG_CNT ? kvt_reg_cnt(timer) : kvt_reg_cval(timer);
	u64 size = (r >> 4) % 4 ? KVM_REG_SIZE_U64 : ((r >> 6) & 0xf) << KVM_REG_SIZE_SHIFT;
	bool set = (r >> 10) & 1, bad = (r >> 11) % 64 == 0, ours = kvt_module_loaded();
	u64 now = kvt_get_reg(vcpu, kvt_reg_cnt(timer)), val, back, h0, h1, faults = 0;
	struct kvm_one_reg one;
	int ret, err;

	if (reg == REG_CTL && (r >> 17) & 1)
		val = (r >> 18) & 0xf;
	else
		val = kvt_hostile_value(s, now);
	id = (id & ~KVM_REG_SIZE_MASK) | size;
	memcpy(reg_buf, &val, sizeof(val));
	one.id = id;
	one.addr = bad ? BAD_ADDR : (u64)reg_buf;
	ret = __vcpu_ioctl(vcpu, set ? KVM_SET_ONE_REG : KVM_GET_ONE_REG, &one);
	err = ret ? errno : 0;

	/* Another size is no timer register, and a SET reads the value first. */
	if (size != KVM_REG_SIZE_U64)
		faults |= BIT_ULL(ENOENT) | (set && bad ? BIT_ULL(EFAULT) : 0);
	else if (bad)
		faults |= BIT_ULL(EFAULT);
	else if (set && reg == REG_CTL && (val & ~(u64)KVT_CTL_MASK) && ours)
		faults |= BIT_ULL(EINVAL);
	check_answer(set ? "SET_ONE_REG" : "GET_ONE_REG", id, val, ret, err, faults);
	count(c, err);
	c->res0_kept += set && !err && reg == REG_CTL && (val & ~(u64)KVT_CTL_MASK);

	/* What was written reads back. */
	if (set && !err) {
		h0 = kvt_host_counter();
		back = kvt_get_reg(vcpu, id);
		h1 = kvt_host_counter();
		if (reg == REG_CVAL)
			TEST_ASSERT(back == val, "%s CVAL 0x%lx after writing 0x%lx",
				    kvt_timer_name(timer), back, val);
		else if (reg == REG_CTL)
			TEST_ASSERT((back & (CTL_ENABLE | CTL_IMASK)) ==
				    (val & (CTL_ENABLE | CTL_IMASK)),
				    "%s CTL 0x%lx after writing 0x%lx", kvt_timer_name(timer),
				    back, val);
		else if (!o->fixed)
			TEST_ASSERT(back - val < CNT_SLACK, "%s CNT set to 0x%lx reads 0x%lx",
				    kvt_timer_name(timer), val, back);
		else
			/* The VMM fixed the offset: a write changes nothing. */
			TEST_ASSERT(back - (h0 - o->offset) <= h1 - h0 + CNT_SLACK,
				    "%s CNT set to 0x%lx under offset 0x%lx reads 0x%lx, host 0x%lx",
				    kvt_timer_name(timer), val, o->offset, back, h0);
	}
	check_timer(vcpu, timer, ours, c);
}

/* Phase 2: ONE_REG requests, the vCPU run between. */
static void fuzz_onereg(struct kvm_vcpu *vcpu, u64 iterations, u64 *s, struct counts *c)
{
	struct offset_state o = {};

	for (u64 i = 1; i <= iterations; i++) {
		onereg_request(vcpu, s, &o, c);
		if (i % RUN_EVERY == 0)
			TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_IDLE);
	}
}

/* One KVM_ARM_SET_COUNTER_OFFSET (@r its random bits), then both CNTs. */
static void offset_request(struct kvm_vm *vm, struct kvm_vcpu *vcpu, u64 *s, u64 r,
			   struct offset_state *o, struct counts *oc)
{
	struct kvm_arm_counter_offset arg;
	u64 h0, h1, cnt, faults;
	int ret, err;

	arg.counter_offset = kvt_hostile_value(s, kvt_host_counter());
	arg.reserved = (r >> 2) % 8 ? 0 : kvt_xorshift(s) | 1;
	faults = arg.reserved ? BIT_ULL(EINVAL) : 0;
	if ((r >> 5) % 32 == 0) {
		ret = __vm_ioctl(vm, KVM_ARM_SET_COUNTER_OFFSET,
				 (struct kvm_arm_counter_offset *)BAD_ADDR);
		faults = BIT_ULL(EFAULT);
	} else {
		ret = __vm_ioctl(vm, KVM_ARM_SET_COUNTER_OFFSET, &arg);
	}
	err = ret ? errno : 0;
	check_answer("KVM_ARM_SET_COUNTER_OFFSET", arg.reserved, arg.counter_offset, ret, err,
		     faults);
	count(oc, err);
	if (!ret) {
		o->fixed = true;
		o->offset = arg.counter_offset;
	}
	/* Both counters: the host's minus the offset. */
	for (int t = VIRTUAL; o->fixed && t <= PHYSICAL; t++) {
		h0 = kvt_host_counter();
		cnt = kvt_get_reg(vcpu, kvt_reg_cnt(t));
		h1 = kvt_host_counter();
		TEST_ASSERT(cnt - (h0 - o->offset) <= h1 - h0 + CNT_SLACK,
			    "%s CNT 0x%lx under offset 0x%lx, host 0x%lx",
			    kvt_timer_name(t), cnt, o->offset, h0);
	}
}

/* Phase 3: KVM_ARM_SET_COUNTER_OFFSET among ONE_REG requests. */
static void fuzz_offset(struct kvm_vm *vm, struct kvm_vcpu *vcpu, u64 iterations, u64 *s,
			struct counts *c, struct counts *oc)
{
	struct offset_state o = {};
	u64 r;

	for (u64 i = 1; i <= iterations; i++) {
		r = kvt_xorshift(s);
		if (o.fixed && r % 4 == 0)
			onereg_request(vcpu, s, &o, c);
		else
			offset_request(vm, vcpu, s, r, &o, oc);
		if (i % RUN_EVERY == 0)
			TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_IDLE);
	}
}

/*
 * Phase 4, at a stop of the guest: ONE_REG reads what the guest had, then
 * the VMM writes CVAL or CTL (defined bits only) of either timer.
 */
static void host_interleave(struct kvm_vm *vm, struct kvm_vcpu *vcpu, u64 *s, u64 *writes,
			    struct counts *c)
{
	bool ours = kvt_module_loaded();
	u64 r, ctl, cval;

	sync_global_from_guest(vm, guest_seen);
	host_wrote_mask = 0;
	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		ctl = kvt_get_reg(vcpu, kvt_reg_ctl(t));
		cval = kvt_get_reg(vcpu, kvt_reg_cval(t));
		TEST_ASSERT(cval == guest_seen[t].cval, "%s timer: ONE_REG CVAL 0x%lx, guest 0x%lx",
			    kvt_timer_name(t), cval, guest_seen[t].cval);
		TEST_ASSERT((ctl & (CTL_ENABLE | CTL_IMASK)) == guest_seen[t].ctl,
			    "%s timer: ONE_REG CTL 0x%lx, guest 0x%lx",
			    kvt_timer_name(t), ctl, guest_seen[t].ctl);
		check_timer(vcpu, t, ours, c);

		r = kvt_xorshift(s);
		if (r & 1) {
			cval = kvt_hostile_value(s, kvt_get_reg(vcpu, kvt_reg_cnt(t)));
			host_wrote[t].cval = cval;
			vcpu_set_reg(vcpu, kvt_reg_cval(t), host_wrote[t].cval);
			host_wrote_mask |= BIT_ULL(2 * t + 1);
			(*writes)++;
		}
		if (r & 2) {
			host_wrote[t].ctl = (r >> 2) & KVT_CTL_MASK;
			vcpu_set_reg(vcpu, kvt_reg_ctl(t), host_wrote[t].ctl);
			host_wrote_mask |= BIT_ULL(2 * t);
			(*writes)++;
		}
		check_timer(vcpu, t, ours, c);
	}
	sync_global_to_guest(vm, host_wrote);
	sync_global_to_guest(vm, host_wrote_mask);
}

static void print_counts(const char *what, const struct counts *c)
{
	ksft_print_msg("%s %lu: %lu ok, EINVAL %lu ENOENT %lu EFAULT %lu ENXIO %lu EBUSY %lu\n",
		       what, c->requests, c->ok, c->einval, c->enoent, c->efault, c->enxio,
		       c->ebusy);
}

int main(int argc, char *argv[])
{
	u64 attr_vms = 8, iterations = 20000, offsets = 2000, seed = 1, s, host_writes = 0;
	struct counts ac = {}, c = {}, oc = {};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	time_t t0;
	u64 stage;

	kvt_number_opts(argc, argv, "a:i:o:g:s:",
			(u64 *[]){ &attr_vms, &iterations, &offsets, &guest_writes, &seed });
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COUNTER_OFFSET));
	ksft_print_msg("backend: %s; seed %lu\n",
		       kvt_module_loaded() ? KVT_MODULE_NAME : "in-tree", seed);
	s = seed * 2 + 1;
	t0 = time(NULL);

	for (u64 k = 0; k < attr_vms; k++)
		fuzz_attrs(k, &s, &ac);
	print_counts("timer attribute requests", &ac);
	ksft_print_msg("%lu VMs: timers on fuzzed PPIs, %lu of them on one PPI (KVM_RUN EINVAL)\n",
		       attr_vms, attr_vms / 2);

	vm = kvt_timer_vm_create(&vcpu, guest_code);
	TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_IDLE);
	fuzz_onereg(vcpu, iterations, &s, &c);
	print_counts("ONE_REG requests", &c);
	if (c.res0_kept)
		ksft_print_msg("in-tree: %lu CTL writes with RES0 bits taken\n", c.res0_kept);

	fuzz_offset(vm, vcpu, offsets, &s, &c, &oc);
	print_counts("KVM_ARM_SET_COUNTER_OFFSET requests", &oc);

	/* A VMM's restore: no counter offset, both timers off. */
	kvt_set_counter_offset(vm, 0);
	for (int t = VIRTUAL; t <= PHYSICAL; t++)
		vcpu_set_reg(vcpu, kvt_reg_ctl(t), 0);

	guest_go = true;
	guest_seed = seed;
	sync_global_to_guest(vm, guest_go);
	sync_global_to_guest(vm, guest_seed);
	sync_global_to_guest(vm, guest_writes);
	while ((stage = kvt_run_to_sync(vcpu)) == STAGE_GUEST)
		host_interleave(vm, vcpu, &s, &host_writes, &c);
	TEST_ASSERT_EQ(stage, STAGE_FUZZED);
	sync_global_from_guest(vm, kvt_irqs);
	if (c.stale_istatus)
		ksft_print_msg("in-tree: %lu CTL reads with ISTATUS set before CVAL\n",
			       c.stale_istatus);
	if (c.wrapped)
		ksft_print_msg("%lu CTL checks left out: the counter wrapped meanwhile\n",
			       c.wrapped);
	ksft_print_msg("guest: %lu timer writes, %lu ONE_REG writes between, %lu interrupts\n",
		       guest_writes, host_writes,
		       kvt_irqs[VIRTUAL].count + kvt_irqs[PHYSICAL].count);

	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "deadlines after the fuzz"), UCALL_DONE);
	ksft_print_msg("still usable: per timer %d deadlines spinning, %d in WFI, once each\n",
		       NR_DEADLINES, NR_DEADLINES);
	ksft_print_msg("%ld s\n", (long)(time(NULL) - t0));
	kvt_timer_vm_free(vm);
	return 0;
}
