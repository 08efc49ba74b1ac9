/*
 * web.h: declarations shared by the files of `taskq web`, the dashboard
 * (web.c: options and HTTP; web_db.c: the connection pool and the JSON
 * queries; web_events.c: LISTEN and Server-Sent Events).
 */
#ifndef TASKQ_WEB_H
#define TASKQ_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
/* the Basic authentication calls are deprecated by libmicrohttpd >= 0.9.76 */
#define MHD_NO_DEPRECATION 1
#include <microhttpd.h>

#include "libpq-fe.h"

/* the result of one API call: a malloc'd JSON body and its HTTP status */
typedef struct WebReply
{
	unsigned int status;
	char	   *body;
} WebReply;

/* a parameter of the request being served (NULL when absent) */
typedef const char *(*ParamFn) (void *ctx, const char *name);

/* web_db.c */
extern bool web_db_init(int size);
extern void web_db_close(void);
extern WebReply web_json_query(const char *sql, int nparams, const char *const *params);
extern WebReply web_error(unsigned int status, const char *message);
extern WebReply web_api_get(const char *path, ParamFn get, void *ctx);
extern WebReply web_api_post(const char *path, ParamFn get, void *ctx);
extern int	web_explain_jobs(const char *querystring);

/* web_events.c */
extern bool web_events_start(void);
extern void web_events_stop(void);
extern struct MHD_Response *web_events_response(void);

/* the embedded pages (web_assets.c, generated from cli/web/ by the Makefile) */
extern unsigned char web_index_html[];
extern unsigned int web_index_html_len;
extern unsigned char web_app_js[];
extern unsigned int web_app_js_len;
extern unsigned char web_style_css[];
extern unsigned int web_style_css_len;

#endif							/* TASKQ_WEB_H */
