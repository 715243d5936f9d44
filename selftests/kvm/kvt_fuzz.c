// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_fuzz - hostile input to the RISC-V vCPU timer
 *
 * A fixed number of random and boundary requests (the seed makes a run
 * reproducible), each checked against the defined answer:
 *
 *  - userspace: KVM_GET/SET_ONE_REG on timer register ids of every size
 *    (1 to 32768 bytes) and of random indexes, with random and boundary
 *    values; the time register is the guest's counter offset.  A wrong size
 *    is -EINVAL, an unknown register -ENOENT, a frequency other than the
 *    host's or a state other than ON/OFF -EINVAL, anything else succeeds.
 *    (The in-tree timer takes any state but ON as OFF, and answers OFF
 *    with -EINVAL when nothing is armed: the test holds it to that and
 *    counts the difference.)  compare reads back what was written, state
 *    OFF reads OFF, time what was written plus the time since.  The vCPU
 *    runs between requests.
 *  - guest: SBI TIME calls with any function id and arguments, and the
 *    legacy set_timer: function 0 succeeds, any other is
 *    SBI_ERR_NOT_SUPPORTED; no timer interrupt arrives before the deadline
 *    last set.
 *  - afterwards the VM is still usable: one interrupt per deadline, none
 *    early, spinning and in WFI.
 *
 *   kvt_fuzz [-i USER_ITERATIONS] [-g GUEST_ITERATIONS] [-s SEED]
 */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "kvt_riscv_timer.h"
#include "ucall_common.h"

#define SBI_ERR_NOT_SUPPORTED	-2
#define NR_DEADLINES		10
#define PERIOD_US		2000
#define SLACK_US		50000
/* Run the vCPU after this many ONE_REG requests. */
#define RUN_EVERY		32
/* A read of time is what was written plus at most this (about 30 h). */
#define TIME_SLACK		BIT_ULL(40)

enum { STAGE_IDLE = 1, STAGE_FUZZED };

/* Shared with the guest. */
static u64 guest_iterations = 10000;
static u64 guest_seed;
static bool guest_fuzz;
static u64 irq_count;
static u64 irq_at;
static u64 armed = -1ULL;
static u64 early_at, early_armed;
static bool check_early;

/* An SBI call with all of a6 (sbi_ecall() takes an int function id). */
static struct sbiret ecall(u64 ext, u64 fid, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4,
			   u64 a5)
{
	register u64 r0 asm("a0") = a0;
	register u64 r1 asm("a1") = a1;
	register u64 r2 asm("a2") = a2;
	register u64 r3 asm("a3") = a3;
	register u64 r4 asm("a4") = a4;
	register u64 r5 asm("a5") = a5;
	register u64 r6 asm("a6") = fid;
	register u64 r7 asm("a7") = ext;
	struct sbiret ret;

	asm volatile("ecall"
		     : "+r"(r0), "+r"(r1)
		     : "r"(r2), "r"(r3), "r"(r4), "r"(r5), "r"(r6), "r"(r7)
		     : "memory");
	ret.error = r0;
	ret.value = r1;
	return ret;
}

static void guest_irq_handler(struct ex_regs *regs)
{
	u64 now = timer_get_cycles();

	GUEST_ASSERT_EQ(regs->cause & ~CAUSE_IRQ_FLAG, IRQ_S_TIMER);
	if (check_early && now < READ_ONCE(armed) && !early_at) {
		WRITE_ONCE(early_at, now);
		WRITE_ONCE(early_armed, armed);
	}
	WRITE_ONCE(irq_at, now);
	WRITE_ONCE(irq_count, irq_count + 1);
	kvt_sbi_set_timer(-1ULL);
	WRITE_ONCE(armed, -1ULL);
}

/*
 * SBI TIME with any function id and arguments, or the legacy call.  The
 * deadline a call sets and the record of it change with interrupts off, so
 * the handler always compares against the deadline in force.
 */
static void guest_fuzz_sbi(void)
{
	u64 s = guest_seed * 2 + 1;	/* odd: never 0 */

	for (u64 i = 0; i < guest_iterations; i++) {
		u64 r = kvt_xorshift(&s);
		u64 deadline = kvt_hostile_value(&s, timer_get_cycles());
		u64 fid = (r & 3) ? 0 : kvt_xorshift(&s) % 8 ? (r >> 8) % 16 : kvt_xorshift(&s);
		struct sbiret ret;

		local_irq_disable();
		if (r % 16 == 5) {
			ret = sbi_ecall(SBI_EXT_0_1_SET_TIMER, 0, deadline, 0, 0, 0, 0, 0);
			WRITE_ONCE(armed, deadline);
		} else {
			ret = ecall(SBI_EXT_TIME, fid, deadline, kvt_xorshift(&s), kvt_xorshift(&s),
				    kvt_xorshift(&s), kvt_xorshift(&s), kvt_xorshift(&s));
			if (fid == SBI_EXT_TIME_SET_TIMER) {
				__GUEST_ASSERT(!ret.error, "set_timer(%lx): error %ld",
					       deadline, ret.error);
				WRITE_ONCE(armed, deadline);
			} else {
				__GUEST_ASSERT(ret.error == SBI_ERR_NOT_SUPPORTED,
					       "TIME function %lx: error %ld, not %d",
					       fid, ret.error, SBI_ERR_NOT_SUPPORTED);
			}
		}
		local_irq_enable();
		__GUEST_ASSERT(!READ_ONCE(early_at),
			       "interrupt at %lx, before the deadline %lx", early_at, early_armed);
	}
	local_irq_disable();
	kvt_sbi_set_timer(-1ULL);
	WRITE_ONCE(armed, -1ULL);
	local_irq_enable();
}

/* One interrupt per deadline, none early, spinning or in WFI. */
static void guest_deadlines(bool wfi)
{
	u64 base = READ_ONCE(irq_count);

	for (int i = 1; i <= NR_DEADLINES; i++) {
		u64 deadline = timer_get_cycles() + usec_to_cycles(PERIOD_US);
		u64 limit = deadline + usec_to_cycles(SLACK_US);

		local_irq_disable();
		kvt_sbi_set_timer(deadline);
		WRITE_ONCE(armed, deadline);
		local_irq_enable();
		while (READ_ONCE(irq_count) < base + i) {
			/* Interrupts off from the check to WFI: none is missed. */
			local_irq_disable();
			if (wfi && READ_ONCE(irq_count) < base + i)
				asm volatile("wfi" ::: "memory");
			local_irq_enable();
			__GUEST_ASSERT(timer_get_cycles() < limit,
				       "interrupt %d not delivered %u us after its deadline",
				       i, SLACK_US);
		}
		__GUEST_ASSERT(irq_at >= deadline, "interrupt at %lx, before its deadline %lx",
			       irq_at, deadline);
		udelay(PERIOD_US);
		GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + i);
	}
}

static void guest_code(void)
{
	timer_irq_enable();
	local_irq_enable();
	/* Idle while the VMM fuzzes ONE_REG: it may arm anything. */
	while (!READ_ONCE(guest_fuzz))
		GUEST_SYNC(STAGE_IDLE);
	local_irq_disable();
	kvt_sbi_set_timer(-1ULL);
	WRITE_ONCE(armed, -1ULL);
	WRITE_ONCE(early_at, 0);
	WRITE_ONCE(irq_count, 0);
	WRITE_ONCE(check_early, true);
	local_irq_enable();

	guest_fuzz_sbi();
	GUEST_SYNC(STAGE_FUZZED);
	guest_deadlines(false);
	guest_deadlines(true);
	GUEST_DONE();
}

/* Room for the largest size a register id can name (1 << 15 bytes). */
static u8 reg_buf[1 << 15] __aligned(8);

struct onereg_counts {
	u64 ok, einval, enoent;
	u64 bad_state_ok;	/* state writes of neither ON nor OFF that succeeded */
};

/* A timer register id: mostly a real one, else any size and index. */
static u64 hostile_id(u64 *s)
{
	u64 r = kvt_xorshift(s);
	u64 size = (r & 1) ? KVM_REG_SIZE_U64 : ((r >> 1) & 0xf) << KVM_REG_SIZE_SHIFT;
	u64 idx;

	switch ((r >> 5) % 4) {
	case 0:
	case 1:
		idx = (r >> 8) % 4;
		break;
	case 2:
		idx = (r >> 8) % 64;
		break;
	default:
		/* Any bits outside the arch, size and type fields. */
		idx = kvt_xorshift(s) & ~(KVM_REG_ARCH_MASK | KVM_REG_SIZE_MASK |
				      KVM_REG_RISCV_TYPE_MASK);
	}
	return KVM_REG_RISCV | KVM_REG_RISCV_TIMER | size | idx;
}

static void fuzz_onereg(struct kvm_vcpu *vcpu, u64 iterations, u64 seed,
			struct onereg_counts *c)
{
	u64 s = seed * 2 + 1, freq, now;
	bool intree = !kvt_module_loaded();

	vcpu_get_reg(vcpu, RISCV_TIMER_REG(frequency), &freq);
	for (u64 i = 0; i < iterations; i++) {
		u64 id = hostile_id(&s), idx, val, back;
		bool set = kvt_xorshift(&s) & 1;
		struct kvm_one_reg reg = { .id = id, .addr = (u64)reg_buf };
		bool size_ok = KVM_REG_SIZE(id) == sizeof(u64);
		int ret, err, want;

		idx = id & ~(KVM_REG_ARCH_MASK | KVM_REG_SIZE_MASK | KVM_REG_RISCV_TYPE_MASK);
		vcpu_get_reg(vcpu, RISCV_TIMER_REG(time), &now);
		val = kvt_xorshift(&s) % 8 ? kvt_hostile_value(&s, now) :
			freq + (kvt_xorshift(&s) % 3) - 1;
		if (idx == KVM_REG_RISCV_TIMER_REG(state) && kvt_xorshift(&s) % 2)
			val = kvt_xorshift(&s) % 3;
		memcpy(reg_buf, &val, sizeof(val));
		ret = __vcpu_ioctl(vcpu, set ? KVM_SET_ONE_REG : KVM_GET_ONE_REG, &reg);
		err = ret ? errno : 0;
		TEST_ASSERT(ret == 0 || ret == -1, "ONE_REG %lx: ret %d", id, ret);

		if (!size_ok)
			want = idx < 4 ? EINVAL : -1;	/* -1: EINVAL or ENOENT */
		else if (idx >= 4)
			want = ENOENT;
		else if (!set)
			want = 0;
		else if (idx == KVM_REG_RISCV_TIMER_REG(frequency))
			want = val == freq ? 0 : EINVAL;
		else if (idx == KVM_REG_RISCV_TIMER_REG(state) && intree)
			/* In-tree: any value but ON is OFF, -EINVAL if not armed. */
			want = val != KVM_RISCV_TIMER_STATE_ON && err ? EINVAL : 0;
		else if (idx == KVM_REG_RISCV_TIMER_REG(state))
			want = val > KVM_RISCV_TIMER_STATE_ON ? EINVAL : 0;
		else
			want = 0;
		if (want == -1)
			TEST_ASSERT(err == EINVAL || err == ENOENT,
				    "%s id %lx: errno %d, not EINVAL/ENOENT",
				    set ? "SET" : "GET", id, err);
		else
			TEST_ASSERT(err == want, "%s id %lx value %lx: errno %d, not %d",
				    set ? "SET" : "GET", id, val, err, want);
		c->ok += !err;
		c->einval += err == EINVAL;
		c->enoent += err == ENOENT;
		c->bad_state_ok += set && !err && idx == KVM_REG_RISCV_TIMER_REG(state) &&
				   val > KVM_RISCV_TIMER_STATE_ON;

		/* What was written reads back. */
		if (set && !err && idx == KVM_REG_RISCV_TIMER_REG(compare)) {
			vcpu_get_reg(vcpu, RISCV_TIMER_REG(compare), &back);
			TEST_ASSERT_EQ(back, val);
		} else if (set && !err && idx == KVM_REG_RISCV_TIMER_REG(state)) {
			/*
			 * OFF reads OFF.  ON may read either: a due compare
			 * fires (or already did, before time moved back).
			 */
			vcpu_get_reg(vcpu, RISCV_TIMER_REG(state), &back);
			if (val == KVM_RISCV_TIMER_STATE_OFF)
				TEST_ASSERT_EQ(back, val);
		} else if (set && !err && idx == KVM_REG_RISCV_TIMER_REG(time)) {
			vcpu_get_reg(vcpu, RISCV_TIMER_REG(time), &back);
			TEST_ASSERT(back - val < TIME_SLACK,
				    "time set to %lx reads back %lx", val, back);
		}

		if (i % RUN_EVERY == RUN_EVERY - 1)
			TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_IDLE);
	}
}

int main(int argc, char *argv[])
{
	struct onereg_counts c = {};
	u64 iterations = 20000, seed = 1, time0, t0;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	kvt_number_opts(argc, argv, "i:g:s:", (u64 *[]){ &iterations, &guest_iterations, &seed });
	ksft_print_msg("backend: %s; seed %lu\n",
		       kvt_module_loaded() ? "kvm_vtimer" : "in-tree", seed);

	vm = kvt_timer_vm_create(&vcpu, guest_code, guest_irq_handler);
	vcpu_get_reg(vcpu, RISCV_TIMER_REG(time), &time0);
	t0 = time(NULL);

	fuzz_onereg(vcpu, iterations, seed, &c);
	ksft_print_msg("ONE_REG: %lu requests, %lu ok, %lu EINVAL, %lu ENOENT\n",
		       iterations, c.ok, c.einval, c.enoent);
	if (c.bad_state_ok)
		ksft_print_msg("in-tree: %lu state writes of neither ON nor OFF taken as OFF\n",
			       c.bad_state_ok);

	/* A VMM's restore: a sane counter offset, the timer off. */
	vcpu_set_reg(vcpu, RISCV_TIMER_REG(time), time0);
	vcpu_set_reg(vcpu, RISCV_TIMER_REG(compare), -1ULL);
	__vcpu_set_reg(vcpu, RISCV_TIMER_REG(state), KVM_RISCV_TIMER_STATE_OFF);
	TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_IDLE);

	guest_fuzz = true;
	guest_seed = seed;
	sync_global_to_guest(vm, guest_fuzz);
	sync_global_to_guest(vm, guest_seed);
	sync_global_to_guest(vm, guest_iterations);
	TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), STAGE_FUZZED);
	sync_global_from_guest(vm, irq_count);
	ksft_print_msg("guest SBI TIME: %lu calls, %lu interrupts, none early\n",
		       guest_iterations, irq_count);
	TEST_ASSERT_EQ(kvt_run_to_sync(vcpu), 0);
	ksft_print_msg("still usable: %d deadlines spinning, %d in WFI, once each, none early\n",
		       NR_DEADLINES, NR_DEADLINES);
	ksft_print_msg("%ld s\n", (long)(time(NULL) - t0));

	kvm_vm_free(vm);
	return 0;
}
