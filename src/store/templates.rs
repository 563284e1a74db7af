//! The `templates` table.

use rusqlite::Row;

use super::codec::{
    corrupt, lifetime_columns, lifetime_params, map_unique, parse_string_list, parse_ts, query_all, string_list, ts,
    user_data_column, user_data_param,
};
use super::{Store, StoreError};
use crate::model::Template;

const COLUMNS: &str =
    "id, name, image_id, vcpu_count, mem_mib, user_data, ssh_authorized_keys, created_at, owner_key_id, \
                       egress, ttl_seconds, idle_timeout_seconds, on_idle, warm_pool_size";

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
        lifetime: lifetime_columns("templates", row, 10)?,
        warm_pool_size: row.get(13)?,
    })
}

impl Store {
    pub fn insert_template(&self, template: &Template) -> Result<(), StoreError> {
        let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
            Box::new(template.id.clone()),
            Box::new(template.name.clone()),
            Box::new(template.image_id.clone()),
            Box::new(template.vcpu_count),
            Box::new(template.mem_mib),
            Box::new(user_data_param(&template.user_data)),
            Box::new(string_list(&template.ssh_authorized_keys)),
            Box::new(ts(&template.created_at)),
            Box::new(template.owner_key_id.clone()),
            Box::new(template.egress.as_ref().map(|e| e.to_column())),
        ];
        values.extend(lifetime_params(&template.lifetime));
        values.push(Box::new(template.warm_pool_size));
        let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
        self.lock()
            .execute(
                &format!("INSERT INTO templates ({COLUMNS}) VALUES ({})", placeholders.join(", ")),
                rusqlite::params_from_iter(values.iter()),
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
