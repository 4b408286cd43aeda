/*
 * print-lua: print the send script of lib/nt_userlog, so that the load
 * client of bench-ws.sh sends exactly as notify-send and notifyd-api do
 * without a copy of the script of its own.
 */
#include <stdio.h>

#include "nt_userlog.h"

int
main(void)
{
	return fputs(nt_lua_userlog_append, stdout) == EOF;
}
