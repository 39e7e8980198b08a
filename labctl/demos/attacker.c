/* The attacker of step 9: run as root inside a container, it tries what a process that broke into the
 * container would try against the host, and prints one JSON line per attempt with the errno the kernel
 * gave. It never does harm: it opens files for writing without writing, asks for an empty module,
 * sets the clock to nothing (settimeofday(NULL, NULL) only checks the capability), and reads at most a
 * few bytes of a disk.
 *
 *   attacker all MAJOR MINOR   every attempt below; MAJOR:MINOR is a block device of the host's disk
 *   attacker only NAME...      only these (mount, sysrq, procsys, kcore, module, userns, clock)
 *   attacker whoami            the effective uid (planted setuid-root through a volume: does it work?)
 *
 * Built static (gcc -static) so that it runs in any image, busybox's included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errno_name(int e)
{
    switch (e) {
    case EPERM: return "EPERM";     case EACCES: return "EACCES";   case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";   case EINVAL: return "EINVAL";   case ENOEXEC: return "ENOEXEC";
    case ENOSYS: return "ENOSYS";   case EBUSY: return "EBUSY";     case ENXIO: return "ENXIO";
    case ENODEV: return "ENODEV";   case EFAULT: return "EFAULT";   case ENOSPC: return "ENOSPC";
    case ENODATA: return "ENODATA"; /* our own mark: the read returned nothing (a masked, empty file) */
    default: return "E?";
    }
}

/* One line: {"attack": ..., "ok": true|false, "errno": "EPERM", "call": "open"}. A kernel built without
 * the feature (no /proc/kcore, no module loader: ENOENT, ENOSYS) is reported as "absent", not as stopped. */
static void report(const char *attack, int ok, const char *call, int err)
{
    if (!ok && (err == ENOSYS || (err == ENOENT && strcmp(call, "mknod") != 0)))
        printf("{\"attack\": \"%s\", \"ok\": null, \"call\": \"%s\", \"errno\": \"%s\", \"code\": %d, "
               "\"absent\": true}\n", attack, call, errno_name(err), err);
    else if (ok)
        printf("{\"attack\": \"%s\", \"ok\": true, \"call\": \"%s\", \"errno\": null}\n", attack, call);
    else
        printf("{\"attack\": \"%s\", \"ok\": false, \"call\": \"%s\", \"errno\": \"%s\", \"code\": %d}\n",
               attack, call, errno_name(err), err);
    fflush(stdout);
}

/* A device node for the host's disk in the container's root (not /tmp: a tmpfs there is mounted nodev, where
 * no device opens), then a read of its first sector: CAP_MKNOD, then the device cgroup. */
static void disk(unsigned major, unsigned minor)
{
    char buf[512];
    unlink("/attacker-disk");
    if (mknod("/attacker-disk", S_IFBLK | 0600, makedev(major, minor)) != 0)
        return report("disk", 0, "mknod", errno);
    int fd = open("/attacker-disk", O_RDONLY);
    int err = errno;
    unlink("/attacker-disk");
    if (fd < 0)
        return report("disk", 0, "open", err);
    ssize_t n = read(fd, buf, sizeof buf);
    err = errno;
    close(fd);
    report("disk", n > 0, "read", n > 0 ? 0 : err);
}

/* Mount a filesystem: CAP_SYS_ADMIN, and the seccomp filter. */
static void do_mount(void)
{
    mkdir("/tmp/attacker-mnt", 0700);
    if (mount("none", "/tmp/attacker-mnt", "tmpfs", 0, NULL) != 0) {
        report("mount", 0, "mount", errno);
    } else {
        umount("/tmp/attacker-mnt");
        report("mount", 1, "mount", 0);
    }
    rmdir("/tmp/attacker-mnt");
}

/* Open a file for writing, and close it without writing a byte. */
static void writable(const char *attack, const char *path)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return report(attack, 0, "open", errno);
    close(fd);
    report(attack, 1, "open", 0);
}

/* Read the kernel's memory image: a masked path shows an empty file instead. */
static void kcore(void)
{
    char buf[64];
    int fd = open("/proc/kcore", O_RDONLY);
    if (fd < 0)
        return report("kcore", 0, "open", errno);
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    if (n > 0)
        report("kcore", 1, "read", 0);
    else
        report("kcore", 0, "read", n == 0 ? ENODATA : err);
}

/* Ask to load a module whose image is empty: past the permission check the loader refuses it (ENOEXEC),
 * so "ok" means a real module would have been loaded. */
static void module(void)
{
    static char empty[1];
    if (syscall(SYS_init_module, empty, 0UL, "") == 0)
        return report("module", 1, "init_module", 0);
    int err = errno;
    report("module", err == ENOEXEC, "init_module", err);
}

/* A user namespace of its own, made in a child so the attacker itself is unchanged. */
static void userns(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno);
    int status = 0;
    waitpid(pid, &status, 0);
    int err = WIFEXITED(status) ? WEXITSTATUS(status) : EINVAL;
    report("userns", err == 0, "unshare", err);
}

/* settimeofday(NULL, NULL) changes nothing, but the kernel checks CAP_SYS_TIME first (cap_settime). */
static void clock_(void)
{
    if (syscall(SYS_settimeofday, NULL, NULL) == 0)   /* glibc's wrapper would dereference NULL */
        return report("clock", 1, "settimeofday", 0);
    report("clock", 0, "settimeofday", errno);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "whoami") == 0) {
        printf("{\"attack\": \"setuid\", \"ok\": %s, \"call\": \"execve\", \"euid\": %d, \"uid\": %d}\n",
               geteuid() == 0 ? "true" : "false", (int)geteuid(), (int)getuid());
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "only") == 0) {
        for (int i = 2; i < argc; i++) {
            const char *a = argv[i];
            if (strcmp(a, "mount") == 0) do_mount();
            else if (strcmp(a, "sysrq") == 0) writable("sysrq", "/proc/sysrq-trigger");
            else if (strcmp(a, "procsys") == 0) writable("procsys", "/proc/sys/kernel/core_pattern");
            else if (strcmp(a, "kcore") == 0) kcore();
            else if (strcmp(a, "module") == 0) module();
            else if (strcmp(a, "userns") == 0) userns();
            else if (strcmp(a, "clock") == 0) clock_();
            else { fprintf(stderr, "attacker: no attack named %s\n", a); return 2; }
        }
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "all") != 0) {
        fprintf(stderr, "usage: attacker all MAJOR MINOR | attacker only NAME... | attacker whoami\n");
        return 2;
    }
    disk((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]));
    do_mount();
    writable("sysrq", "/proc/sysrq-trigger");
    writable("procsys", "/proc/sys/kernel/core_pattern");
    kcore();
    module();
    userns();
    clock_();
    return 0;
}
