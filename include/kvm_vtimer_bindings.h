/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C declarations kvm_vtimer's Rust code sees.  bindgen reads this file
 * with the module's C flags; include/bindgen_parameters keeps the allowlist
 * tight so that only what the wrappers in rust/ use is generated.
 */
#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>
#ifdef CONFIG_RISCV
#include <asm/kvm_vcpu_timer.h>
#endif
#ifdef CONFIG_ARM64
#include <kvm/arm_arch_timer.h>
#endif
#include "kvm_vtimer_shim.h"
