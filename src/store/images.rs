//! The `images` table.

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension, Row};

use super::codec::{corrupt, map_unique, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{Image, ImageProfile};

const COLUMNS: &str = "id, name, profile, kernel_path, bzimage_path, initrd_path, rootfs_path, \
                       login_user, boot_args, size_bytes, created_at";

fn path_text(path: &Option<PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn from_row(row: &Row<'_>) -> Result<Image, StoreError> {
    let profile: String = row.get(2)?;
    let created_at: String = row.get(10)?;
    let path =
        |i: usize| -> rusqlite::Result<Option<PathBuf>> { Ok(row.get::<_, Option<String>>(i)?.map(PathBuf::from)) };
    Ok(Image {
        id: row.get(0)?,
        name: row.get(1)?,
        profile: ImageProfile::parse(&profile).ok_or_else(|| corrupt("images", format!("profile {profile:?}")))?,
        kernel_path: path(3)?,
        bzimage_path: path(4)?,
        initrd_path: path(5)?,
        rootfs_path: path(6)?,
        login_user: row.get(7)?,
        boot_args: row.get(8)?,
        size_bytes: row.get::<_, i64>(9)? as u64,
        created_at: parse_ts("images", &created_at)?,
    })
}

impl Store {
    pub fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        self.lock()
            .execute(
                &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    image.id,
                    image.name,
                    image.profile.as_str(),
                    path_text(&image.kernel_path),
                    path_text(&image.bzimage_path),
                    path_text(&image.initrd_path),
                    path_text(&image.rootfs_path),
                    image.login_user,
                    image.boot_args,
                    image.size_bytes as i64,
                    ts(&image.created_at),
                ],
            )
            .map_err(|e| map_unique(e, &["id"]))?;
        Ok(())
    }

    pub fn get_image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.query_images("WHERE id = ?1", &[&id]).map(|mut v| v.pop())
    }

    /// All images, newest first.
    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.query_images("ORDER BY created_at DESC, rowid DESC", &[])
    }

    pub fn newest_image(&self) -> Result<Option<Image>, StoreError> {
        self.query_images("ORDER BY created_at DESC, rowid DESC LIMIT 1", &[])
            .map(|mut v| v.pop())
    }

    /// By id, or else the newest image with that name.
    pub fn find_image(&self, id_or_name: &str) -> Result<Option<Image>, StoreError> {
        if let Some(image) = self.get_image(id_or_name)? {
            return Ok(Some(image));
        }
        self.query_images(
            "WHERE name = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            &[&id_or_name],
        )
        .map(|mut v| v.pop())
    }

    pub fn delete_image(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM images WHERE id = ?1", [id])? > 0)
    }

    /// Whether any VM or template refers to the image.
    pub fn images_in_use(&self, image_id: &str) -> Result<bool, StoreError> {
        let used: Option<i64> = self
            .lock()
            .query_row(
                "SELECT 1 FROM vms WHERE image_id = ?1 UNION ALL SELECT 1 FROM templates WHERE image_id = ?1 LIMIT 1",
                [image_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(used.is_some())
    }

    fn query_images(&self, tail: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Image>, StoreError> {
        query_all(
            &self.read(),
            &format!("SELECT {COLUMNS} FROM images {tail}"),
            args,
            from_row,
        )
    }
}
