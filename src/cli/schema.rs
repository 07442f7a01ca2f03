//! `drover schema`: the JSON Schema of spec files, derived from `spec::file`.

use super::exit;

pub fn run() -> u8 {
    match serde_json::to_string_pretty(&crate::spec::json_schema()) {
        Ok(s) => {
            println!("{s}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: cannot serialize the schema: {e}");
            exit::ERROR
        }
    }
}
