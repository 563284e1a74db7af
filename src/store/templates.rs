//! The `templates` table.

use rusqlite::{params, Row};

use super::codec::{
    corrupt, map_unique, parse_string_list, parse_ts, query_all, string_list, ts, user_data_column, user_data_param,
};
use super::{Store, StoreError};
use crate::model::Template;

const COLUMNS: &str =
    "id, name, image_id, vcpu_count, mem_mib, user_data, ssh_authorized_keys, created_at, owner_key_id, egress";

fn from_row(row: &Row<'_>) -> Result<Template, StoreError> {
    let keys: String = row.get(6)?;
    let created_at: String = row.get(7)?;
    Ok(Template {
        id: row.get(0)?,
        name: row.get(1)?,
        image_id: row.get(2)?,
        vcpu_count: row.get(3)?,
        mem_mib: row.get(4)?,
        user_data: user_data_column("templates", row, 5)?,
        ssh_authorized_keys: parse_string_list("templates", &keys)?,
        created_at: parse_ts("templates", &created_at)?,
        owner_key_id: row.get(8)?,
        egress: match row.get::<_, Option<String>>(9)? {
            Some(text) => Some(
                crate::model::Egress::from_column(&text)
                    .map_err(|e| corrupt("templates", format!("egress {text:?}: {e}")))?,
            ),
            None => None,
        },
    })
}

impl Store {
    pub fn insert_template(&self, template: &Template) -> Result<(), StoreError> {
        self.lock()
            .execute(
                &format!("INSERT INTO templates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    template.id,
                    template.name,
                    template.image_id,
                    template.vcpu_count,
                    template.mem_mib,
                    user_data_param(&template.user_data),
                    string_list(&template.ssh_authorized_keys),
                    ts(&template.created_at),
                    template.owner_key_id,
                    template.egress.as_ref().map(|e| e.to_column()),
                ],
            )
            .map_err(|e| map_unique(e, &["id"]))?;
        Ok(())
    }

    pub fn get_template(&self, id: &str) -> Result<Option<Template>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM templates WHERE id = ?1");
        Ok(query_all(&self.read(), &sql, &[&id], from_row)?.pop())
    }

    /// All templates, oldest first.
    pub fn list_templates(&self) -> Result<Vec<Template>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM templates ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[], from_row)
    }

    pub fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM templates WHERE id = ?1", [id])? > 0)
    }
}
