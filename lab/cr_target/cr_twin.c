// SPDX-License-Identifier: GPL-2.0
/*
 * A second target, the same code under another name (KBUILD_MODNAME keeps
 * its debugfs directory, threads and cache apart): for tests of several
 * targets at once.
 */
#include "cr_target.c"
