-- taskq 0.1.0 -> 0.2.0.  Also how a fresh install reaches 0.2.0: CREATE
-- EXTENSION runs taskq--0.1.0.sql (frozen, byte for byte the 0.1.0 release)
-- and then this script, as pg_stat_statements ships one base script and its
-- updates.  Every schema change after 0.1.0 goes here, in the part of its
-- concern (this file is sql/0.2.0/*.sql joined by `make update-script`:
-- edit the parts, never the joined file); the upgrade test (test/t/030_upgrade.pl) checks that an updated
-- 0.1.0 database equals a fresh install and that its old jobs still run.

\echo Use "ALTER EXTENSION taskq UPDATE TO '0.2.0'" to load this file. \quit

