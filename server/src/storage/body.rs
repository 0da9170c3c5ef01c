//! The column type for message text.
//!
//! Any text is a valid message, NUL included, and must come back byte for byte.
//! PostgreSQL's `text` cannot hold NUL, so there the column is `bytea` holding the
//! UTF-8 bytes; SQLite's `TEXT` keeps NUL as it is. [`MessageBody`] binds and reads
//! the right one for each backend, so the shared queries need not know.

use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef},
    sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef},
    Decode, Encode, Postgres, Sqlite, Type,
};

/// A message's text as a query parameter or result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(pub String);

impl Type<Postgres> for MessageBody {
    fn type_info() -> PgTypeInfo {
        <Vec<u8> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for MessageBody {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&[u8] as Encode<Postgres>>::encode_by_ref(&self.0.as_bytes(), buf)
    }
}

impl Decode<'_, Postgres> for MessageBody {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let bytes = <Vec<u8> as Decode<Postgres>>::decode(value)?;
        Ok(MessageBody(String::from_utf8(bytes)?))
    }
}

impl Type<Sqlite> for MessageBody {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for MessageBody {
    fn encode_by_ref(&self, args: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode_by_ref(&self.0, args)
    }
}

impl Decode<'_, Sqlite> for MessageBody {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(MessageBody(<String as Decode<Sqlite>>::decode(value)?))
    }
}
