/* SPDX-License-Identifier: GPL-2.0 */
/*
 * line_out(): print one line to stdout with a single write(), so that the
 * line stays whole between the kernel's console messages.  Shared by the
 * emulated host's /init (init.c) and the real-guest runner
 * (../realvm/kvt_realvm.c), two static programs.
 */
#ifndef KVT_LINE_OUT_H
#define KVT_LINE_OUT_H

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#define LINE_OUT_MAX	4096

static void line_out(const char *fmt, ...)
{
	char buf[LINE_OUT_MAX + 64];
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if (len > (int)sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	if (write(STDOUT_FILENO, buf, len) < 0)
		return;
}

#endif /* KVT_LINE_OUT_H */
