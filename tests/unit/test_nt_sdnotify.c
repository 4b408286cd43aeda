#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "nt_sdnotify.h"

/* A datagram socket bound to name (a path, or "@abstract"), as systemd's. */
static int
listener(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(n < sizeof(sa.sun_path));
	memcpy(sa.sun_path, name, n);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	else
		n++;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
	return fd;
}

/* The next datagram, whole, as a string; "" when none is waiting. */
static const char *
next_datagram(int fd)
{
	static char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT | MSG_TRUNC);

	if (n < 0)
		return "";
	assert_true((size_t)n < sizeof(buf));
	buf[n] = '\0';
	return buf;
}

/* The lowest free descriptor: a leaked socket would raise it. */
static int
lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY);

	close(fd);
	return fd;
}

static void
sends_each_state_as_one_datagram_to_a_path(void **state)
{
	char dir[] = "/tmp/nt_sdnotify.XXXXXX", path[64], err[128] = "";
	int fd, free_fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notify", dir);
	fd = listener(path);
	setenv("NOTIFY_SOCKET", path, 1);
	free_fd = lowest_free_fd();

	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), 0);
	assert_int_equal(nt_sdnotify("RELOADING=1\n", err, sizeof(err)), 0);
	assert_int_equal(nt_sdnotify("STOPPING=1\n", err, sizeof(err)), 0);
	assert_string_equal(next_datagram(fd), "READY=1\n");
	assert_string_equal(next_datagram(fd), "RELOADING=1\n");
	assert_string_equal(next_datagram(fd), "STOPPING=1\n");
	assert_string_equal(next_datagram(fd), "");
	assert_string_equal(err, "");
	assert_int_equal(lowest_free_fd(), free_fd);

	close(fd);
	unlink(path);
	rmdir(dir);
	unsetenv("NOTIFY_SOCKET");
}

static void
sends_to_an_abstract_socket(void **state)
{
	char name[64], err[128] = "";
	int fd;

	snprintf(name, sizeof(name), "@nt_sdnotify-test-%ld", (long)getpid());
	fd = listener(name);
	setenv("NOTIFY_SOCKET", name, 1);
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), 0);
	assert_string_equal(next_datagram(fd), "READY=1\n");
	close(fd);
	unsetenv("NOTIFY_SOCKET");
}

static void
does_nothing_outside_systemd(void **state)
{
	char err[128] = "";

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), 0);
	assert_string_equal(err, "");
	unsetenv("NOTIFY_SOCKET");
}

static void
refuses_names_that_are_no_socket(void **state)
{
	char err[128], longname[200];

	setenv("NOTIFY_SOCKET", "run/notify", 1);
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "NOTIFY_SOCKET"));

	memset(longname, 'x', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longname, 1);
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "NOTIFY_SOCKET"));
	unsetenv("NOTIFY_SOCKET");
}

static void
reports_a_socket_nobody_listens_on(void **state)
{
	char err[128] = "", small[8];
	int free_fd = lowest_free_fd();

	setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
	assert_int_equal(nt_sdnotify("READY=1\n", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/notify"));
	assert_non_null(strstr(err, "No such file"));
	/* A short buffer is cut, still NUL-terminated. */
	assert_int_equal(nt_sdnotify("READY=1\n", small, sizeof(small)), -1);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(lowest_free_fd(), free_fd);
	unsetenv("NOTIFY_SOCKET");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sends_each_state_as_one_datagram_to_a_path),
		cmocka_unit_test(sends_to_an_abstract_socket),
		cmocka_unit_test(does_nothing_outside_systemd),
		cmocka_unit_test(refuses_names_that_are_no_socket),
		cmocka_unit_test(reports_a_socket_nobody_listens_on),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
