// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The running kernel's verdict on every program of BPF objects, each
 * loaded alone as BPF_PROG_TYPE_XDP, for tests/verifier_suite.rs.
 *
 *   kverdict OBJ...
 *
 * Prints one JSON object per program and line:
 *   {"obj":"verifier_and","prog":"NAME","expect":"success|failure|",
 *    "retval_tag":"TEXT"|null,"kernel":"ok|refused|libbpf",
 *    "errno":N,"why":"LAST VERIFIER LOG LINE","retval":N|null}
 *
 * expect and retval_tag are the program's test annotations
 * (bpf_misc.h's __success, __failure, __retval: BTF decl tags). A program
 * the kernel accepts that has a __retval runs once through
 * BPF_PROG_TEST_RUN on 64 zero bytes, as the kernel's test_loader runs it,
 * and "retval" is what the kernel returned. "libbpf" means the object or
 * program never reached the kernel's verifier (a relocation or extern
 * libbpf could not resolve); "why" then holds libbpf's message.
 *
 * Built by scripts/get-verifier-suite.sh against the libbpf of the same
 * kernel tree. Needs root (privileged loads).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

static char libbpf_msg[8192];

static int on_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	size_t n = strlen(libbpf_msg);
	if (level == LIBBPF_DEBUG || n + 1 >= sizeof(libbpf_msg))
		return 0;
	/* Every warning of one load, in order (the cause comes first), but
	 * for the object's BTF, which the kernel may refuse and libbpf then
	 * does without. */
	char line[sizeof(libbpf_msg)];
	vsnprintf(line, sizeof(line), fmt, ap);
	if (strstr(line, "BTF"))
		return 0;
	snprintf(libbpf_msg + n, sizeof(libbpf_msg) - n, "%s", line);
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = *s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			printf("\\n");
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* The last non-empty line of a verifier log, in place. */
static const char *last_line(char *log)
{
	size_t n = strlen(log);
	while (n && (log[n - 1] == '\n' || log[n - 1] == ' '))
		log[--n] = 0;
	char *nl = strrchr(log, '\n');
	/* "processed N insns" closes every log: the reason is above it. */
	if (nl && strncmp(nl + 1, "processed ", 10) == 0) {
		*nl = 0;
		return last_line(log);
	}
	return nl ? nl + 1 : log;
}

/* The program's annotations from the object's BTF decl tags. */
static void annotations(const struct btf *btf, const char *prog, const char **expect,
			char *retval, size_t retval_len)
{
	*expect = "";
	retval[0] = 0;
	if (!btf)
		return;
	for (unsigned id = 1; id < btf__type_cnt(btf); id++) {
		const struct btf_type *t = btf__type_by_id(btf, id);
		if (!btf_is_decl_tag(t) || btf_decl_tag(t)->component_idx != -1)
			continue;
		const struct btf_type *f = btf__type_by_id(btf, t->type);
		if (!btf_is_func(f) || strcmp(btf__name_by_offset(btf, f->name_off), prog))
			continue;
		const char *tag = btf__name_by_offset(btf, t->name_off);
		if (!strcmp(tag, "comment:test_expect_success"))
			*expect = "success";
		else if (!strcmp(tag, "comment:test_expect_failure"))
			*expect = "failure";
		else if (!strncmp(tag, "comment:test_retval=", 20))
			snprintf(retval, retval_len, "%s", tag + 20);
	}
}

/* Opens PATH with only PROG_NAME to load, as XDP; NULL when libbpf cannot. */
static struct bpf_object *open_one(const char *path, const char *prog_name,
				   struct bpf_program **want)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *p;
	*want = NULL;
	if (!obj)
		return NULL;
	bpf_object__for_each_program(p, obj) {
		int me = !strcmp(bpf_program__name(p), prog_name);
		/* The suite's tail-call targets (dummy_*) fill its prog arrays'
		 * initial slots: libbpf cannot fill a slot with a program it did
		 * not load. */
		bpf_program__set_autoload(p, me || !strncmp(bpf_program__name(p), "dummy_", 6));
		if (me)
			*want = p;
	}
	bpf_program__set_type(*want, BPF_PROG_TYPE_XDP);
	bpf_program__set_expected_attach_type(*want, 0);
	return obj;
}

static void judge(const char *path, const char *obj_name, const char *prog_name)
{
	/* Big enough for the reason of any refusal in the suite at log level 1. */
	static char log[64 << 20];
	char retval_tag[128];
	const char *expect;
	struct bpf_program *want;
	const char *kernel;
	const char *why = "";
	long long retval = 0;
	int have_retval = 0;

	libbpf_msg[0] = 0;
	struct bpf_object *obj = open_one(path, prog_name, &want);
	if (!obj)
		return;
	annotations(bpf_object__btf(obj), prog_name, &expect, retval_tag, sizeof(retval_tag));
	/* The verdict without a log: a log of states can overflow its buffer
	 * (ENOSPC) on a program the verifier accepts. */
	bpf_program__set_log_level(want, 0);
	int err = bpf_object__load(obj);
	if (!err) {
		kernel = "ok";
		if (retval_tag[0]) {
			unsigned char in[64] = {0}, out[256];
			LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in, .data_size_in = sizeof(in),
				    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);
			if (!bpf_prog_test_run_opts(bpf_program__fd(want), &o)) {
				retval = o.retval;
				have_retval = 1;
			}
		}
	} else if (strstr(libbpf_msg, "BPF program load failed") ||
		   strstr(libbpf_msg, "failed to resolve CO-RE")) {
		/* Refused: again with a log, for the reason. */
		kernel = strstr(libbpf_msg, "CO-RE") ? "libbpf" : "refused";
		bpf_object__close(obj);
		obj = open_one(path, prog_name, &want);
		log[0] = 0;
		bpf_program__set_log_buf(want, log, sizeof(log));
		bpf_program__set_log_level(want, 1);
		libbpf_msg[0] = 0;
		bpf_object__load(obj);
		if (*kernel == 'r') {
			why = last_line(log);
			/* The verifier accepted it; the load failed after. */
			if (!strncmp(why, "processed ", 10)) {
				static char after[64];
				snprintf(after, sizeof(after), "refused after verification: errno %d", -err);
				why = after;
			}
		}
		else
			why = strstr(libbpf_msg, "failed to resolve CO-RE") ?: libbpf_msg;
	} else {
		kernel = "libbpf";
		why = libbpf_msg;
	}
	printf("{\"obj\":");
	json_str(obj_name);
	printf(",\"prog\":");
	json_str(prog_name);
	printf(",\"expect\":\"%s\",\"retval_tag\":", expect);
	if (retval_tag[0])
		json_str(retval_tag);
	else
		printf("null");
	printf(",\"kernel\":\"%s\",\"errno\":%d,\"why\":", kernel, err < 0 ? -err : err);
	json_str(why);
	printf(",\"retval\":");
	if (have_retval)
		printf("%lld", retval);
	else
		printf("null");
	printf("}\n");
	fflush(stdout);
	bpf_object__close(obj);
}

int main(int argc, char **argv)
{
	libbpf_set_print(on_print);
	for (int a = 1; a < argc; a++) {
		libbpf_msg[0] = 0;
		struct bpf_object *obj = bpf_object__open_file(argv[a], NULL);
		if (!obj) {
			/* Not a verdict on any one program: said, and skipped. */
			fprintf(stderr, "kverdict: %s: libbpf cannot open it: %s\n", argv[a],
				libbpf_msg[0] ? libbpf_msg : strerror(errno));
			libbpf_msg[0] = 0;
			continue;
		}
		const char *base = strrchr(argv[a], '/');
		base = base ? base + 1 : argv[a];
		char name[256];
		snprintf(name, sizeof(name), "%s", base);
		char *dot = strrchr(name, '.');
		if (dot)
			*dot = 0;
		struct bpf_program *p;
		/* Names first: judging reopens the object per program. */
		char **names = NULL;
		size_t n = 0;
		bpf_object__for_each_program(p, obj) {
			names = realloc(names, (n + 1) * sizeof(*names));
			names[n++] = strdup(bpf_program__name(p));
		}
		bpf_object__close(obj);
		for (size_t i = 0; i < n; i++) {
			judge(argv[a], name, names[i]);
			free(names[i]);
		}
		free(names);
	}
	return 0;
}
