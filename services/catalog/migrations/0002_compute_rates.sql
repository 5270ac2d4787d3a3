-- Per-market compute rates of Windows Server VMs, per vCPU-hour, for Azure
-- Hybrid Benefit estimates. Rates are in millionths of a minor unit of the
-- market's currency (a US cent is 1 000 000), so sub-cent rates stay exact
-- integers. They include tax where the market's prices do.
CREATE TABLE compute_rates (
    market TEXT PRIMARY KEY REFERENCES markets (code),
    windows_rate_micro_minor BIGINT NOT NULL CHECK (windows_rate_micro_minor > 0),
    base_rate_micro_minor BIGINT NOT NULL CHECK (base_rate_micro_minor > 0),
    CHECK (base_rate_micro_minor <= windows_rate_micro_minor)
);
