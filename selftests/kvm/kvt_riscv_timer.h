/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What kvm_vtimer's RISC-V timer selftests share: the SBI TIME calls, the
 * guest's timer by either way, and a one-vCPU VM whose guest takes timer
 * interrupts.
 */
#ifndef KVT_RISCV_TIMER_H
#define KVT_RISCV_TIMER_H

#include "arch_timer.h"
#include "kvm_util.h"
#include "processor.h"
#include "sbi.h"
#include "ucall_common.h"

#include "kvt_common.h"

#define SBI_EXT_TIME		0x54494D45
#define SBI_EXT_TIME_SET_TIMER	0
#define SBI_EXT_0_1_SET_TIMER	0x0

/* SBI TIME set_timer from the guest. */
static inline struct sbiret kvt_sbi_set_timer(u64 deadline)
{
	return sbi_ecall(SBI_EXT_TIME, SBI_EXT_TIME_SET_TIMER, deadline,
			 0, 0, 0, 0, 0);
}

/* Guest: set the timer to @when, by stimecmp if @sstc, else SBI set_timer. */
static inline void kvt_guest_set_cmp(bool sstc, u64 when)
{
	struct sbiret ret;

	if (sstc) {
		timer_set_cmp(when);
		return;
	}
	ret = kvt_sbi_set_timer(when);
	GUEST_ASSERT_EQ(ret.error, 0);
}

/* Guest: whether the timer interrupt is pending (sip.STIP). */
static inline bool kvt_guest_stip_pending(void)
{
	return csr_read(CSR_SIP) & IE_TIE;
}

/*
 * For a VM whose @nr vCPUs (all it will have) the caller created:
 * interrupts handled by @handler, and the timer frequency in the guest's
 * timer_freq.
 */
static inline void kvt_timer_vm_setup(struct kvm_vm *vm, struct kvm_vcpu **vcpus, u32 nr,
				      exception_handler_fn handler)
{
	vm_init_vector_tables(vm);
	vm_install_interrupt_handler(vm, handler);
	for (u32 i = 0; i < nr; i++)
		vcpu_init_vector_tables(vcpus[i]);
	vcpu_get_reg(vcpus[0], RISCV_TIMER_REG(frequency), &timer_freq);
	sync_global_to_guest(vm, timer_freq);
}

/* A VM with one vCPU running @guest_code, set up as above. */
static inline struct kvm_vm *kvt_timer_vm_create(struct kvm_vcpu **vcpu,
						 void *guest_code,
						 exception_handler_fn handler)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest_code);

	kvt_timer_vm_setup(vm, vcpu, 1, handler);
	return vm;
}

/* Destroy a VM of kvt_timer_vm_create() (as on arm64, which has more). */
static inline void kvt_timer_vm_free(struct kvm_vm *vm)
{
	kvm_vm_free(vm);
}

#endif
