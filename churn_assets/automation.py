"""When assets follow their upstream on their own: declarative automation conditions."""

import dagster as dg

#: Run when anything upstream updated, but never past a blocking check that failed.
#: `eager()` alone ignores checks: after the data checks or the quality gate failed, the next
#: automation tick would still train on rejected data or promote a rejected model. In-tick
#: requests still count as passed, so one run can carry a parent, its blocking checks and its
#: child; if a check fails in that run, Dagster skips the child there.
FOLLOWS_PASSED_CHECKS = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, behind passed blocking checks")
