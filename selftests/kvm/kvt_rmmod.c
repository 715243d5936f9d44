// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_rmmod - a VM holds the timer module for its whole life
 *
 * With kvm_vtimer loaded:
 *  - creating a VM takes a reference on the module, destroying it drops it;
 *  - unloading the module while a VM exists fails and changes nothing: the
 *    VM keeps running on its timer;
 *  - once the VM is gone the module unloads, and a VM created then runs on
 *    KVM's built-in timer;
 *  - the module loads again (from the path given as the only argument), so
 *    the rest of the test plan runs with it.
 *
 * On arm64 the guest of each VM also takes a virtual timer interrupt, at or
 * after its deadline: from kvm_vtimer's timer while the failed unload leaves
 * it in place, from KVM's built-in timer once the module is gone.
 *
 * Skips when kvm_vtimer is not loaded.
 */
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __aarch64__
#include "kvt_arm64_timer.h"

#define TIMER_MS	1

static void guest_code(void)
{
	GUEST_SYNC(1);
	kvt_guest_timer_init();
	kvt_guest_first_irq(VIRTUAL, TIMER_MS);
	GUEST_DONE();
}

static struct kvm_vm *create_vm(struct kvm_vcpu **vcpu)
{
	return kvt_timer_vm_create(vcpu, guest_code);
}

static void free_vm(struct kvm_vm *vm)
{
	kvt_timer_vm_free(vm);
}
#else
#include "kvt_common.h"

static void guest_code(void)
{
	GUEST_SYNC(1);
	GUEST_DONE();
}

static struct kvm_vm *create_vm(struct kvm_vcpu **vcpu)
{
	return vm_create_with_one_vcpu(vcpu, guest_code);
}

static void free_vm(struct kvm_vm *vm)
{
	kvm_vm_free(vm);
}
#endif

static void run_vm_to_done(struct kvm_vcpu *vcpu, const char *what)
{
	struct ucall uc;

	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_SYNC);
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_DONE);
}

int main(int argc, char *argv[])
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	long before, with_vm;
	int ret;

	TEST_REQUIRE(argc == 2);
	__TEST_REQUIRE(kvt_module_refcnt() >= 0, KVT_MODULE_NAME " is not loaded");
	before = kvt_module_refcnt();

	vm = create_vm(&vcpu);
	with_vm = kvt_module_refcnt();
	TEST_ASSERT(with_vm == before + 1,
		    "a new VM took %ld references on " KVT_MODULE_NAME ", not 1: no backend?",
		    with_vm - before);

	ret = syscall(SYS_delete_module, KVT_MODULE_NAME, O_NONBLOCK);
	TEST_ASSERT(ret == -1 && (errno == EWOULDBLOCK || errno == EBUSY),
		    "unloading the module under a VM: ret %d errno %d", ret, errno);
	ksft_print_msg("unload refused while a VM exists: %s\n", strerror(errno));
	TEST_ASSERT_EQ(kvt_module_refcnt(), with_vm);
	run_vm_to_done(vcpu, "the VM after the refused unload");

	free_vm(vm);
	TEST_ASSERT_EQ(kvt_module_refcnt(), before);
	kvt_unload_module();
	TEST_ASSERT_EQ(kvt_module_refcnt(), -1);

	/* No backend: the built-in timer serves the next VM. */
	vm = create_vm(&vcpu);
	run_vm_to_done(vcpu, "the VM after the unload");
	free_vm(vm);

	kvt_load_module(argv[1], "");
	TEST_ASSERT_EQ(kvt_module_refcnt(), 0);
	ksft_print_msg("unloaded with no VM, reloaded\n");
	return 0;
}
