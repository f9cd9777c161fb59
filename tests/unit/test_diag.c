#include "diag.h"
#include "unit.h"

#include <errno.h>
#include <string.h>

/* Shapes taken from a container's /proc/self/mountinfo. */
static const char MOUNTINFO[] =
	"600 550 0:60 / / rw,relatime - overlay overlay rw\n"
	"601 600 0:63 / /proc rw,nosuid - proc proc rw\n"
	"610 600 0:26 /usbmuxd /run/host/usbmuxd rw,nosuid - tmpfs tmpfs rw\n"
	"611 600 0:26 / /run/host\\040dir rw - tmpfs tmpfs rw\n"
	"612 600 0:26 / /mnt/with\\134backslash rw - tmpfs tmpfs rw\n";

static void finds_mount_points(void)
{
	CU_ASSERT_TRUE(diag_is_mount_point(MOUNTINFO, "/"));
	CU_ASSERT_TRUE(diag_is_mount_point(MOUNTINFO, "/run/host/usbmuxd"));
	CU_ASSERT_TRUE(diag_is_mount_point(MOUNTINFO, "/run/host dir"));
	CU_ASSERT_TRUE(diag_is_mount_point(MOUNTINFO, "/mnt/with\\backslash"));
	/* the root field (4th) must not be mistaken for the mount point */
	CU_ASSERT_FALSE(diag_is_mount_point(MOUNTINFO, "/usbmuxd"));
	CU_ASSERT_FALSE(diag_is_mount_point(MOUNTINFO, "/run/host"));
	CU_ASSERT_FALSE(diag_is_mount_point(MOUNTINFO, "/run"));
}

static void malformed_mountinfo(void)
{
	CU_ASSERT_FALSE(diag_is_mount_point("", "/"));
	CU_ASSERT_FALSE(diag_is_mount_point("garbage\n\n  \n1 2", "/"));
	CU_ASSERT_FALSE(diag_is_mount_point("1 2 3 4", "/"));
	CU_ASSERT_TRUE(diag_is_mount_point("1 2 3 4 /x", "/x")); /* no trailing newline */
	CU_ASSERT_FALSE(diag_is_mount_point("1 2 3 4 /x\\9", "/x\t")); /* bad escape kept literal */
}

static void explains_errors(void)
{
	char m[512];
	diag_unix_connect(m, sizeof(m), "/run/host/usbmuxd", -ECONNREFUSED, true);
	CU_ASSERT_PTR_NOT_NULL(strstr(m, "Mount the directory, not the file"));
	diag_unix_connect(m, sizeof(m), "/run/host/usbmuxd", -ECONNREFUSED, false);
	CU_ASSERT_PTR_NULL(strstr(m, "not the file"));
	CU_ASSERT_PTR_NOT_NULL(strstr(m, "nothing listens"));
	diag_unix_connect(m, sizeof(m), "/run/host/usbmuxd", -ENOENT, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(m, "no socket at /run/host/usbmuxd"));
	diag_unix_connect(m, sizeof(m), "/p", -EACCES, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(m, "permission denied"));
	diag_unix_connect(m, sizeof(m), "/p", -EAGAIN, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(m, "listen queue"));
	diag_unix_connect(m, sizeof(m), "/p", -EIO, false);
	CU_ASSERT_PTR_NOT_NULL(strstr(m, strerror(EIO)));
	/* a short buffer truncates, never overflows */
	char tiny[8];
	diag_unix_connect(tiny, sizeof(tiny), "/run/host/usbmuxd", -ENOENT, false);
	CU_ASSERT_EQUAL(strlen(tiny), 7);
}

int unit_diag(void)
{
	static const struct unit_test t[] = {
		{ "mount points from mountinfo", finds_mount_points },
		{ "malformed mountinfo", malformed_mountinfo },
		{ "upstream errors explained", explains_errors },
		{ NULL, NULL },
	};
	return unit_add_suite("diag", t);
}
