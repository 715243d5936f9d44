// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_cntpct - the counters an arm64 guest reads, with offsets the VMM set
 *
 * The guest reads CNTPCT_EL0 and CNTVCT_EL0 and stops.  Each reading must
 * lie between the host's counter before the run and after it, less the
 * offset the VMM gave that counter:
 *
 *  - KVM_ARM_SET_COUNTER_OFFSET with the host's counter less SMALL (both
 *    counters then start near SMALL);
 *  - in another VM, ONE_REG writes of KVM_REG_ARM_PTIMER_CNT and
 *    KVM_REG_ARM_TIMER_CNT with two different small values (the offset of
 *    each is then known within the host's counter readings around the
 *    write).
 *
 * The registers KVM_REG_ARM_PTIMER_CNT and KVM_REG_ARM_TIMER_CNT must read
 * within the same bounds.
 *
 * A host with ECV (FEAT_ECV, CNTPOFF_EL2) lets the guest read CNTPCT_EL0
 * without a trap, offset by CNTPOFF_EL2.  Debian's QEMU 10.0 applies
 * CNTPOFF_EL2 only with SCR_EL3.ECVEn set, and `-M virt,virtualization=on`
 * has no EL3: there the guest reads the host's counter and this test fails
 * (arm64-ecv boots a QEMU with that fixed, patches/qemu).
 */
#include "kvt_arm64_timer.h"

#define SMALL		1000000ULL
#define PCNT		BIT_ULL(20)
#define VCNT		BIT_ULL(40)
#define NR_READS	3

static void guest_code(void)
{
	for (int i = 0; i < NR_READS; i++) {
		u64 p, v;

		isb();
		p = read_sysreg(cntpct_el0);
		isb();
		v = read_sysreg(cntvct_el0);
		GUEST_SYNC_ARGS(i, p, v, 0, 0);
	}
	GUEST_DONE();
}

/* A counter value and the bounds it must lie within. */
static void check(const char *what, u64 val, u64 lo, u64 hi)
{
	TEST_ASSERT(lo <= val && val <= hi,
		    "%s 0x%lx, outside [0x%lx, 0x%lx] (host counter less the offset)",
		    what, val, lo, hi);
}

/*
 * Run the guest NR_READS times.  The physical counter's offset is between
 * @poff_lo and @poff_hi, the virtual counter's between @voff_lo and @voff_hi.
 */
static void run_reads(struct kvm_vcpu *vcpu, u64 poff_lo, u64 poff_hi,
		      u64 voff_lo, u64 voff_hi)
{
	struct ucall uc;
	u64 before, after, pcnt, vcnt;

	for (int i = 0; i < NR_READS; i++) {
		before = kvt_host_counter();
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "counter reads"), UCALL_SYNC);
		pcnt = kvt_get_reg(vcpu, KVM_REG_ARM_PTIMER_CNT);
		vcnt = kvt_get_reg(vcpu, KVM_REG_ARM_TIMER_CNT);
		after = kvt_host_counter();
		TEST_ASSERT_EQ(uc.args[1], i);

		check("guest CNTPCT_EL0", uc.args[2], before - poff_hi, after - poff_lo);
		check("guest CNTVCT_EL0", uc.args[3], before - voff_hi, after - voff_lo);
		check("ONE_REG PTIMER_CNT", pcnt, before - poff_hi, after - poff_lo);
		check("ONE_REG TIMER_CNT", vcnt, before - voff_hi, after - voff_lo);
		TEST_ASSERT(pcnt >= uc.args[2] && vcnt >= uc.args[3],
			    "ONE_REG CNT (0x%lx, 0x%lx) behind the guest's reading (0x%lx, 0x%lx)",
			    pcnt, vcnt, uc.args[2], uc.args[3]);
	}
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "counter reads"), UCALL_DONE);
}

static void test_vm_offset(void)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	u64 offset;

	vm = kvt_timer_vm_create(&vcpu, guest_code);
	offset = kvt_host_counter() - SMALL;
	kvt_set_counter_offset(vm, offset);
	run_reads(vcpu, offset, offset, offset, offset);
	ksft_print_msg("KVM_ARM_SET_COUNTER_OFFSET 0x%lx: guest counters in bounds\n", offset);
	kvm_vm_free(vm);
}

static void test_onereg_cnt(void)
{
	u64 plo, phi, vlo, vhi, h0, h1;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	vm = kvt_timer_vm_create(&vcpu, guest_code);
	/* The offset is the host's counter at the write, less the value. */
	h0 = kvt_host_counter();
	vcpu_set_reg(vcpu, KVM_REG_ARM_PTIMER_CNT, PCNT);
	h1 = kvt_host_counter();
	plo = h0 - PCNT;
	phi = h1 - PCNT;
	h0 = kvt_host_counter();
	vcpu_set_reg(vcpu, KVM_REG_ARM_TIMER_CNT, VCNT);
	h1 = kvt_host_counter();
	vlo = h0 - VCNT;
	vhi = h1 - VCNT;
	run_reads(vcpu, plo, phi, vlo, vhi);
	ksft_print_msg("ONE_REG PTIMER_CNT 0x%llx, TIMER_CNT 0x%llx: guest counters in bounds\n",
		       PCNT, VCNT);
	kvm_vm_free(vm);
}

int main(void)
{
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COUNTER_OFFSET));
	test_vm_offset();
	test_onereg_cnt();
	return 0;
}
