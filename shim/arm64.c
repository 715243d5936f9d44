// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vtimer's C helpers for arm64: the system register accessors, the
 * vCPU's saved timer registers and the vGIC calls, each a thin function.
 * No timer logic lives here (rust/timer/el1.rs has it).
 *
 * Timers are named by @phys: false for the EL1 virtual timer (CNTV_*),
 * true for the EL1 physical timer (CNTP_*).
 */

#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/kvm_host.h>
#include <linux/module.h>
#include <clocksource/arm_arch_timer.h>
#include <asm/arch_timer.h>
#include <asm/kvm_emulate.h>
#include <asm/kvm_hyp.h>
#include <asm/kvm_nested.h>
#include <kvm/arm_arch_timer.h>
#include <kvm/arm_vgic.h>

#include "../include/kvm_vtimer_shim.h"

static struct arch_timer_context *kvt_ctx(struct kvm_vcpu *vcpu, bool phys)
{
	return phys ? vcpu_ptimer(vcpu) : vcpu_vtimer(vcpu);
}

/*
 * The vCPU's saved timer registers.  Not __vcpu_sys_reg(): its nested-virt
 * sanitising is KVM-internal, and VMs with nested virtualization never run
 * on this backend (it declines them at their first run).
 */
#define kvt_sys_reg(vcpu, r)	ctxt_sys_reg(&(vcpu)->arch.ctxt, r)

static u32 kvt_ppi(struct kvm_vcpu *vcpu, bool phys)
{
	return vcpu->kvm->arch.timer_data.ppi[phys ? TIMER_PTIMER :
						    TIMER_VTIMER];
}

/* Marked: the host timer's callback may read it while deinit clears it. */
void *kvt_vcpu_priv(struct kvm_vcpu *vcpu)
{
	return READ_ONCE(vcpu->arch.timer_cpu.backend_priv);
}

void kvt_vcpu_set_priv(struct kvm_vcpu *vcpu, void *priv)
{
	WRITE_ONCE(vcpu->arch.timer_cpu.backend_priv, priv);
}

void kvt_vcpu_wake_up(struct kvm_vcpu *vcpu)
{
	kvm_vcpu_wake_up(vcpu);
}

unsigned long kvt_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void kvt_local_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

bool kvt_arm64_has_vhe(void)
{
	return has_vhe();
}

bool kvt_arm64_has_cntpoff(void)
{
	return has_cntpoff();
}

bool kvt_arm64_has_hw_deactivation(void)
{
	return kvm_vgic_has_hw_deactivation();
}

u64 kvt_arm64_counter(void)
{
	return arch_timer_read_counter();
}

u64 kvt_arm64_counter_hz(void)
{
	return arch_timer_get_cntfrq();
}

u64 kvt_arm64_offset(struct kvm_vcpu *vcpu, bool phys)
{
	struct arch_timer_vm_data *d = &vcpu->kvm->arch.timer_data;

	return phys ? READ_ONCE(d->poffset) : READ_ONCE(d->voffset);
}

u64 kvt_arm64_guest_counter(struct kvm_vcpu *vcpu, bool phys)
{
	return arch_timer_read_counter() - kvt_arm64_offset(vcpu, phys);
}

void kvt_arm64_set_offset(struct kvm_vcpu *vcpu, bool phys, u64 offset)
{
	struct arch_timer_vm_data *d = &vcpu->kvm->arch.timer_data;

	if (phys)
		WRITE_ONCE(d->poffset, offset);
	else
		WRITE_ONCE(d->voffset, offset);
}

bool kvt_arm64_offset_fixed(struct kvm_vcpu *vcpu)
{
	return test_bit(KVM_ARCH_FLAG_VM_COUNTER_OFFSET,
			&vcpu->kvm->arch.flags);
}

u64 kvt_arm64_ctl(struct kvm_vcpu *vcpu, bool phys)
{
	return phys ? kvt_sys_reg(vcpu, CNTP_CTL_EL0) :
		      kvt_sys_reg(vcpu, CNTV_CTL_EL0);
}

u64 kvt_arm64_cval(struct kvm_vcpu *vcpu, bool phys)
{
	return phys ? kvt_sys_reg(vcpu, CNTP_CVAL_EL0) :
		      kvt_sys_reg(vcpu, CNTV_CVAL_EL0);
}

void kvt_arm64_set_ctl(struct kvm_vcpu *vcpu, bool phys, u64 ctl)
{
	if (phys)
		kvt_sys_reg(vcpu, CNTP_CTL_EL0) = ctl;
	else
		kvt_sys_reg(vcpu, CNTV_CTL_EL0) = ctl;
}

void kvt_arm64_set_cval(struct kvm_vcpu *vcpu, bool phys, u64 cval)
{
	if (phys)
		kvt_sys_reg(vcpu, CNTP_CVAL_EL0) = cval;
	else
		kvt_sys_reg(vcpu, CNTV_CVAL_EL0) = cval;
}

/*
 * Load a direct timer into this CPU's hardware, interrupts disabled: its
 * counter offset (CNTVOFF; CNTPOFF where the CPU has it), @cval as the
 * compare value, as is, then @ctl.  The physical timer is direct only on
 * VHE; the caller has turned the guest's CVAL into what the hardware must
 * hold in the host context (rust/timer/cntp.rs).
 */
void kvt_arm64_hw_load(bool phys, u64 offset, u64 ctl, u64 cval)
{
	if (!phys) {
		kvm_arm_timer_write_cntvoff(offset);
		write_sysreg_el0(cval, SYS_CNTV_CVAL);
		isb();
		write_sysreg_el0(ctl, SYS_CNTV_CTL);
		return;
	}
	if (has_cntpoff())
		write_sysreg_s(offset, SYS_CNTPOFF_EL2);
	write_sysreg_el0(cval, SYS_CNTP_CVAL);
	isb();
	write_sysreg_el0(ctl, SYS_CNTP_CTL);
}

/*
 * Read a direct timer's CTL and compare value back, as the hardware has
 * them, and stop it, interrupts disabled.  The counter offsets go back to
 * 0: userspace may run before the next load, and on nVHE the kernel's
 * counter is then the virtual one.
 */
void kvt_arm64_hw_save(bool phys, u64 *ctl, u64 *cval)
{
	if (!phys) {
		*ctl = read_sysreg_el0(SYS_CNTV_CTL);
		*cval = read_sysreg_el0(SYS_CNTV_CVAL);
		write_sysreg_el0(0, SYS_CNTV_CTL);
		isb();
		kvm_arm_timer_write_cntvoff(0);
		return;
	}
	*ctl = read_sysreg_el0(SYS_CNTP_CTL);
	*cval = read_sysreg_el0(SYS_CNTP_CVAL);
	write_sysreg_el0(0, SYS_CNTP_CTL);
	isb();
	if (has_cntpoff())
		write_sysreg_s(0, SYS_CNTPOFF_EL2);
}

u64 kvt_arm64_hw_ctl(bool phys)
{
	return phys ? read_sysreg_el0(SYS_CNTP_CTL) :
		      read_sysreg_el0(SYS_CNTV_CTL);
}

u64 kvt_arm64_hw_cval(bool phys)
{
	return phys ? read_sysreg_el0(SYS_CNTP_CVAL) :
		      read_sysreg_el0(SYS_CNTV_CVAL);
}

/*
 * VHE: the guest may use the physical counter and timer directly unless
 * the VM has a physical offset the hardware cannot apply (no CNTPOFF); then
 * its accesses trap and are emulated on the hardware timer.  On nVHE the
 * hypervisor sets these traps at each guest entry.
 */
void kvt_arm64_set_traps(struct kvm_vcpu *vcpu)
{
	u64 bits = (CNTHCTL_EL1PCEN | CNTHCTL_EL1PCTEN) << 10;

	if (!has_vhe())
		return;
	if (!has_cntpoff() && kvt_arm64_offset(vcpu, true))
		sysreg_clear_set(cnthctl_el2, bits, 0);
	else
		sysreg_clear_set(cnthctl_el2, 0, bits);
}

bool kvt_arm64_irqchip_in_kernel(struct kvm_vcpu *vcpu)
{
	return irqchip_in_kernel(vcpu->kvm);
}

bool kvt_arm64_nested(struct kvm_vcpu *vcpu)
{
	return vcpu_has_nv(vcpu);
}

/* Whether this backend declined @kvm at its first vCPU run (vm_accept). */
bool kvt_vm_declined(struct kvm *kvm)
{
	return READ_ONCE(kvm->arch.timer_data.backend_declined);
}

void kvt_arm64_irq_line(struct kvm_vcpu *vcpu, bool phys, bool level)
{
	int ret;

	if (!irqchip_in_kernel(vcpu->kvm))
		return;
	/* Fails only for an unowned or out-of-range INTID: a bug of ours. */
	ret = kvm_vgic_inject_irq(vcpu->kvm, vcpu, kvt_ppi(vcpu, phys), level,
				  kvt_ctx(vcpu, phys));
	WARN_ON_ONCE(ret);
}

bool kvt_arm64_irq_map_active(struct kvm_vcpu *vcpu, bool phys)
{
	return kvm_vgic_map_is_active(vcpu, kvt_ppi(vcpu, phys));
}

/* Not before the vGIC is initialised: the vCPU has no private IRQs yet. */
void kvt_arm64_irq_map_reset(struct kvm_vcpu *vcpu, bool phys)
{
	if (!vgic_initialized(vcpu->kvm))
		return;
	kvm_vgic_reset_mapped_irq(vcpu, kvt_ppi(vcpu, phys));
}

void kvt_arm64_host_irq_set_active(struct kvm_vcpu *vcpu, bool phys,
				   bool active)
{
	int ret;

	ret = irq_set_irqchip_state(kvt_ctx(vcpu, phys)->host_timer_irq,
				    IRQCHIP_STATE_ACTIVE, active);
	WARN_ON_ONCE(ret);
}

/* The vGIC resamples a mapped timer line when the guest deactivates it. */
static bool kvt_arm64_get_input_level(int vintid)
{
	struct kvm_vcpu *vcpu = kvm_get_running_vcpu();

	if (!vcpu)
		return false;
	if (vintid == kvt_ppi(vcpu, false))
		return kvt_rust_arm64_input_level(kvt_vcpu_priv(vcpu), false);
	if (vintid == kvt_ppi(vcpu, true))
		return kvt_rust_arm64_input_level(kvt_vcpu_priv(vcpu), true);
	return false;
}

static struct irq_ops kvt_irq_ops = {
	.get_input_level = kvt_arm64_get_input_level,
};

/*
 * First run, in-kernel vGIC: the two PPIs must differ and be free for us;
 * they are then fixed for the VM's life.  Map the direct timers' PPIs to
 * the host's interrupts.  -EINVAL for bad PPIs, else the vGIC's error.
 */
int kvt_arm64_irq_setup(struct kvm_vcpu *vcpu, bool map_phys)
{
	struct kvm *kvm = vcpu->kvm;
	u32 vppi, pppi;
	int ret = -EINVAL;

	mutex_lock(&kvm->arch.config_lock);
	vppi = kvt_ppi(vcpu, false);
	pppi = kvt_ppi(vcpu, true);
	if (vppi != pppi &&
	    !kvm_vgic_set_owner(vcpu, vppi, kvt_ctx(vcpu, false)) &&
	    !kvm_vgic_set_owner(vcpu, pppi, kvt_ctx(vcpu, true))) {
		set_bit(KVM_ARCH_FLAG_TIMER_PPIS_IMMUTABLE, &kvm->arch.flags);
		ret = 0;
	}
	mutex_unlock(&kvm->arch.config_lock);
	if (ret)
		return ret;

	ret = kvm_vgic_map_phys_irq(vcpu, vcpu_vtimer(vcpu)->host_timer_irq,
				    vppi, &kvt_irq_ops);
	if (ret || !map_phys)
		return ret;
	return kvm_vgic_map_phys_irq(vcpu, vcpu_ptimer(vcpu)->host_timer_irq,
				     pppi, &kvt_irq_ops);
}

bool kvt_arm64_wfit_deadline(struct kvm_vcpu *vcpu, u64 *deadline)
{
	if (!cpus_have_final_cap(ARM64_HAS_WFXT) ||
	    !vcpu_get_flag(vcpu, IN_WFIT))
		return false;
	*deadline = vcpu_get_reg(vcpu, kvm_vcpu_sys_get_rt(vcpu));
	return true;
}

/* The timer lines userspace was last told (userspace irqchip). */
void kvt_arm64_user_lines(struct kvm_vcpu *vcpu, bool *virt, bool *phys)
{
	u64 bits = vcpu->run->s.regs.device_irq_level;

	*virt = bits & KVM_ARM_DEV_EL1_VTIMER;
	*phys = bits & KVM_ARM_DEV_EL1_PTIMER;
}

void kvt_arm64_set_user_lines(struct kvm_vcpu *vcpu, bool virt, bool phys)
{
	u64 *bits = &vcpu->run->s.regs.device_irq_level;

	*bits &= ~(u64)(KVM_ARM_DEV_EL1_VTIMER | KVM_ARM_DEV_EL1_PTIMER);
	if (virt)
		*bits |= KVM_ARM_DEV_EL1_VTIMER;
	if (phys)
		*bits |= KVM_ARM_DEV_EL1_PTIMER;
}

/*
 * The timer and register of ONE_REG id @regid (KVM checked it is one of
 * the six timer registers): 0, or -ENOENT.
 */
int kvt_arm64_one_reg(u64 regid, bool *phys, u32 *treg)
{
	switch (regid) {
	case KVM_REG_ARM_TIMER_CTL:
	case KVM_REG_ARM_PTIMER_CTL:
		*treg = TIMER_REG_CTL;
		break;
	case KVM_REG_ARM_TIMER_CNT:
	case KVM_REG_ARM_PTIMER_CNT:
		*treg = TIMER_REG_CNT;
		break;
	case KVM_REG_ARM_TIMER_CVAL:
	case KVM_REG_ARM_PTIMER_CVAL:
		*treg = TIMER_REG_CVAL;
		break;
	default:
		return -ENOENT;
	}
	*phys = regid == KVM_REG_ARM_PTIMER_CTL ||
		regid == KVM_REG_ARM_PTIMER_CNT ||
		regid == KVM_REG_ARM_PTIMER_CVAL;
	return 0;
}
