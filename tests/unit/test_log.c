#include "log.h"
#include "unit.h"

static void ratelimit_windows(void)
{
	struct log_ratelimit rl = { .interval_ms = 1000 };
	unsigned sup = 99;
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 5000, &sup));
	CU_ASSERT_EQUAL(sup, 0);
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 5001, &sup));
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 5999, &sup));
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 6000, &sup));
	CU_ASSERT_EQUAL(sup, 2); /* reports what it swallowed */
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 9000, &sup));
	CU_ASSERT_EQUAL(sup, 0);
}

static void ratelimit_first_at_time_zero(void)
{
	struct log_ratelimit rl = { .interval_ms = 1000 };
	unsigned sup;
	CU_ASSERT_TRUE(log_ratelimit_pass(&rl, 0, &sup));
	CU_ASSERT_FALSE(log_ratelimit_pass(&rl, 10, &sup));
}

static void level_names(void)
{
	enum log_level l;
	CU_ASSERT_EQUAL(log_parse_level("debug", &l), 0);
	CU_ASSERT_EQUAL(l, LOG_DEBUG);
	CU_ASSERT_EQUAL(log_parse_level("WARN", &l), 0);
	CU_ASSERT_EQUAL(l, LOG_WARN);
	CU_ASSERT_EQUAL(log_parse_level("verbose", &l), -1);
	CU_ASSERT_EQUAL(log_parse_level("", &l), -1);
}

int unit_log(void)
{
	static const struct unit_test t[] = {
		{ "rate limit windows and counts", ratelimit_windows },
		{ "rate limit at time zero", ratelimit_first_at_time_zero },
		{ "level names", level_names },
		{ NULL, NULL },
	};
	return unit_add_suite("log", t);
}
