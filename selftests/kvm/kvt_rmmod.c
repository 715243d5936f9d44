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
 * Skips when kvm_vtimer is not loaded.
 */
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvt_riscv_timer.h"

static void guest_code(void)
{
	GUEST_SYNC(1);
	GUEST_DONE();
}

static void run_vm_to_done(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_SYNC);
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, &uc), UCALL_DONE);
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

	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	with_vm = kvt_module_refcnt();
	TEST_ASSERT_EQ(with_vm, before + 1);

	ret = syscall(SYS_delete_module, KVT_MODULE_NAME, O_NONBLOCK);
	TEST_ASSERT(ret == -1 && (errno == EWOULDBLOCK || errno == EBUSY),
		    "unloading the module under a VM: ret %d errno %d", ret, errno);
	ksft_print_msg("unload refused while a VM exists: %s\n", strerror(errno));
	TEST_ASSERT_EQ(kvt_module_refcnt(), with_vm);
	run_vm_to_done(vcpu);

	kvm_vm_free(vm);
	TEST_ASSERT_EQ(kvt_module_refcnt(), before);
	kvt_unload_module();
	TEST_ASSERT_EQ(kvt_module_refcnt(), -1);

	/* No backend: the built-in timer serves the next VM. */
	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	run_vm_to_done(vcpu);
	kvm_vm_free(vm);

	kvt_load_module(argv[1], "");
	TEST_ASSERT_EQ(kvt_module_refcnt(), 0);
	ksft_print_msg("unloaded with no VM, reloaded\n");
	return 0;
}
