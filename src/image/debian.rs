pub async fn build(_name: &str, _env: &super::BuildEnv, _progress: super::ProgressFn<'_>) -> Result<crate::model::Image, super::ImageError> { Err(super::ImageError::Build("debian: not yet".into())) }
