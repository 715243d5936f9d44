// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_timer_onereg - the RISC-V timer's ONE_REG interface
 *
 * What a VMM does to save and restore a vCPU (live migration), and the
 * errors a bad request must get:
 *
 *  - frequency: the host's value is accepted, any other is -EINVAL;
 *  - a register id of the wrong size is -EINVAL, an unknown one -ENOENT;
 *  - state: a value other than ON/OFF is -EINVAL; OFF with nothing armed
 *    succeeds (there is nothing to turn off);
 *  - save/restore of an armed deadline: the guest arms its timer, the VMM
 *    reads compare and state, disarms, writes compare and then state=ON;
 *    the interrupt arrives at the saved deadline, not at once, and state
 *    reads back ON.
 */
#include "kvt_riscv_timer.h"
#include "ucall_common.h"

#define DELAY_MS		200

static u64 irq_count;
static u64 irq_at;

static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_ASSERT_EQ(regs->cause & ~CAUSE_IRQ_FLAG, IRQ_S_TIMER);
	WRITE_ONCE(irq_at, timer_get_cycles());
	WRITE_ONCE(irq_count, irq_count + 1);
	kvt_sbi_set_timer(-1ULL);
}

static void guest_code(void)
{
	u64 deadline = timer_get_cycles() + msec_to_cycles(DELAY_MS);
	u64 limit = deadline + msec_to_cycles(10 * DELAY_MS);

	timer_irq_enable();
	kvt_sbi_set_timer(deadline);
	GUEST_SYNC(deadline);

	/* The VMM saved and restored the timer meanwhile. */
	local_irq_enable();
	while (!READ_ONCE(irq_count))
		__GUEST_ASSERT(timer_get_cycles() < limit, "restored timer never fired");
	__GUEST_ASSERT(irq_at >= deadline,
		       "restored timer fired at %lu, before its deadline %lu",
		       irq_at, deadline);
	GUEST_ASSERT_EQ(irq_count, 1);
	GUEST_DONE();
}

static u64 timer_reg_u32(u64 id)
{
	return (id & ~KVM_REG_SIZE_MASK) | KVM_REG_SIZE_U32;
}

static void check_errors(struct kvm_vcpu *vcpu)
{
	struct kvm_one_reg reg;
	u64 freq, val;
	u32 val32 = 0;
	int ret;

	vcpu_get_reg(vcpu, RISCV_TIMER_REG(frequency), &freq);
	TEST_ASSERT(freq, "timer frequency is 0");
	TEST_ASSERT_EQ(__vcpu_set_reg(vcpu, RISCV_TIMER_REG(frequency), freq), 0);

	ret = __vcpu_set_reg(vcpu, RISCV_TIMER_REG(frequency), freq + 1);
	TEST_ASSERT(ret == -1 && errno == EINVAL,
		    "frequency %lu (host: %lu): ret %d errno %d", freq + 1, freq, ret, errno);

	reg.id = timer_reg_u32(RISCV_TIMER_REG(compare));
	reg.addr = (u64)&val32;
	ret = __vcpu_ioctl(vcpu, KVM_GET_ONE_REG, &reg);
	TEST_ASSERT(ret == -1 && errno == EINVAL, "32-bit compare read: ret %d errno %d",
		    ret, errno);

	reg.id = RISCV_TIMER_REG(state) + 1;
	reg.addr = (u64)&val;
	ret = __vcpu_ioctl(vcpu, KVM_GET_ONE_REG, &reg);
	TEST_ASSERT(ret == -1 && errno == ENOENT, "register past state: ret %d errno %d",
		    ret, errno);

	ret = __vcpu_set_reg(vcpu, RISCV_TIMER_REG(state), 2);
	TEST_ASSERT(ret == -1 && errno == EINVAL, "state 2: ret %d errno %d", ret, errno);

	/* Nothing armed yet: turning the timer off is not an error. */
	ret = __vcpu_set_reg(vcpu, RISCV_TIMER_REG(state), KVM_RISCV_TIMER_STATE_OFF);
	TEST_ASSERT(!ret, "state=OFF with nothing armed: errno %d", errno);
}

int main(void)
{
	u64 deadline, compare, state;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	vm = kvt_timer_vm_create(&vcpu, guest_code, guest_irq_handler);

	check_errors(vcpu);
	ksft_print_msg("ONE_REG error checks passed\n");

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_SYNC);
	deadline = uc.args[1];

	/* Save ... */
	vcpu_get_reg(vcpu, RISCV_TIMER_REG(compare), &compare);
	vcpu_get_reg(vcpu, RISCV_TIMER_REG(state), &state);
	TEST_ASSERT_EQ(compare, deadline);
	TEST_ASSERT_EQ(state, KVM_RISCV_TIMER_STATE_ON);
	/* ... then restore, as into a new vCPU: off, compare, state. */
	vcpu_set_reg(vcpu, RISCV_TIMER_REG(state), KVM_RISCV_TIMER_STATE_OFF);
	vcpu_set_reg(vcpu, RISCV_TIMER_REG(compare), compare);
	vcpu_set_reg(vcpu, RISCV_TIMER_REG(state), state);
	vcpu_get_reg(vcpu, RISCV_TIMER_REG(state), &state);
	TEST_ASSERT_EQ(state, KVM_RISCV_TIMER_STATE_ON);
	vcpu_get_reg(vcpu, RISCV_TIMER_REG(compare), &compare);
	TEST_ASSERT_EQ(compare, deadline);

	kvt_run_until_done(vcpu);
	ksft_print_msg("saved deadline restored: interrupt at or after it\n");

	kvm_vm_free(vm);
	return 0;
}
