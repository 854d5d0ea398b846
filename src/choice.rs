//! Closed sets of names as enums: `choice!` declares an enum whose values are read and written
//! as their names (TOML, JSON, the command line), refuses any other name with one line that
//! lists the known ones, and gives every `match` over it exhaustiveness.

/// `choice! { /// doc  pub enum Name { /// doc  Variant = "name", … } }`
macro_rules! choice {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name, as written in configs and outputs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        /// As its name in quotes (`"darts-if"`), as the string it replaces printed.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// The value named `s`; otherwise `unknown value "s" (known: "a", "b", …)`.
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::choice::unknown(s, &[$($text),+])),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use choice;

/// The one-line refusal of an unknown name.
pub fn unknown(s: &str, known: &[&str]) -> String {
    let list = known.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ");
    format!("unknown value {s:?} (known: {list})")
}

#[cfg(test)]
mod tests {
    choice! {
        /// A test set.
        pub enum Colour { Red = "red", DarkBlue = "dark-blue" }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused_in_one_line() {
        assert_eq!("dark-blue".parse::<Colour>(), Ok(Colour::DarkBlue));
        assert_eq!(Colour::Red.to_string(), "red");
        assert_eq!(format!("{:?}", Colour::DarkBlue), "\"dark-blue\"");
        assert_eq!(serde_json::to_string(&Colour::DarkBlue).unwrap(), "\"dark-blue\"");
        assert_eq!(serde_json::from_str::<Colour>("\"red\"").unwrap(), Colour::Red);
        let e = serde_json::from_str::<Colour>("\"green\"").unwrap_err().to_string();
        assert!(e.starts_with("unknown value \"green\" (known: \"red\", \"dark-blue\")"), "{e}");
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
    }
}
