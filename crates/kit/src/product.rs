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
