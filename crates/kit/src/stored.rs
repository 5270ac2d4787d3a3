//! States with one stored spelling each. [`stored_enum!`](crate::stored_enum)
//! defines an enum of a domain state together with its text in the database
//! (and nowhere else): `as_db` writes it, `FromStr` reads it, and a stored
//! text this version does not know is an error ([`UnknownValue`]), never a
//! default.

/// A stored text that names no value of the enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue;

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an unknown stored value")
    }
}

impl std::error::Error for UnknownValue {}

/// Defines a state enum with its stored spelling:
///
/// ```
/// csp_kit::stored_enum! {
///     /// Whether a subscription can be used.
///     pub enum SubscriptionStatus {
///         /// In use.
///         Active = "active",
///         /// Cancelled.
///         Cancelled = "cancelled",
///     }
/// }
/// assert_eq!(SubscriptionStatus::Active.as_db(), "active");
/// assert_eq!("cancelled".parse(), Ok(SubscriptionStatus::Cancelled));
/// assert!("paused".parse::<SubscriptionStatus>().is_err());
/// ```
#[macro_export]
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling.
            pub const fn as_db(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::stored::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err($crate::stored::UnknownValue),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_db())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::stored_enum! {
        /// A test state.
        enum State {
            /// One.
            One = "one",
            /// Two.
            Two = "two",
        }
    }

    #[test]
    fn every_value_round_trips_and_unknown_text_is_an_error() {
        for state in State::ALL {
            assert_eq!(state.as_db().parse::<State>(), Ok(*state));
        }
        assert_eq!("three".parse::<State>(), Err(super::UnknownValue));
        assert_eq!("One".parse::<State>(), Err(super::UnknownValue));
    }
}
