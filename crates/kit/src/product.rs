//! The product vocabulary every service shares: what a product is and how
//! long its subscriptions run. The catalog defines products; ordering
//! records what was bought; licensing gives software only for server
//! subscriptions.

crate::stored_enum! {
    /// What a product is.
    pub enum ProductKind {
        /// Software with keys and downloads (Windows Server, SQL Server).
        ServerSubscription = "server_subscription",
        /// An Azure reservation (no software).
        AzureReservation = "azure_reservation",
    }
}

crate::stored_enum! {
    /// How long a subscription runs (the ISO 8601 duration, as Partner
    /// Center spells it, is the stored spelling).
    pub enum Term {
        /// One year.
        OneYear = "P1Y",
        /// Three years.
        ThreeYears = "P3Y",
    }
}

crate::stored_enum! {
    /// What a cancellation window is counted in.
    pub enum WindowUnit {
        /// Hours after purchase.
        Hours = "hours",
        /// Days (of 24 hours) after purchase.
        Days = "days",
        /// Until the term ends.
        Term = "term",
    }
}

crate::stored_enum! {
    /// How much of the price a cancellation refunds.
    pub enum RefundRule {
        /// All of it.
        Full = "full",
        /// The share of the term left, counted in whole hours.
        ProratedByHour = "prorated_by_hour",
        /// The share of the term left, counted in whole days.
        ProratedByDay = "prorated_by_day",
    }
}
