"""The bound on a unit test's wait for a child process: a hang guard, not a timing.

In ``make test`` the unit tests run beside two sites and a Go build on two cores, where a
child's 2 s once took more than 120 s (the fault suite's, in the project's CI). A bound
short enough to look like "how long this takes" fails such a run; this one only stops a
child that will never end, with its output, before CI's own limit stops everything."""

HANG_SECONDS = 900
