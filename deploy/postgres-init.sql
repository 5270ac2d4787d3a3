-- One database per service, for deploy/compose.yaml (run once, when the
-- PostgreSQL volume is new).
CREATE DATABASE csp_catalog;
CREATE DATABASE csp_ordering;
CREATE DATABASE csp_licensing;
CREATE DATABASE csp_audit;
CREATE DATABASE csp_support;
