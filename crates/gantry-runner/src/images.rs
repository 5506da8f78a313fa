//! A job's image artifacts: the image its steps built (or gantry built through the engine's
//! build), saved into the artifact store, and pushed to a registry when the job says so.

use crate::cache::Emit;
use crate::context::RunContext;
use gantry_engine::ports::Stream;
use std::path::Path;

/// Stores one declared artifact: its files, or the image the steps built — saved from the Docker
/// engine as an archive beside its description, stored like any artifact, and tagged
/// `<repo>:run-<N>` and `<repo>:<commit>` in the engine so the run's image is easy to find.
/// Returns the image's id for an image artifact.
pub(crate) async fn store_artifact(
    ctx: &RunContext,
    project_dir: &Path,
    artifact: &gantry_model::ArtifactSpec,
    built: Option<&str>,
) -> anyhow::Result<(gantry_engine::ports::StoredArtifact, Option<String>)> {
    use anyhow::Context;
    let Some(image) = built.or(artifact.image.as_deref()) else {
        let stored = ctx.artifacts.store(project_dir, &artifact.paths).await?;
        return Ok((stored, None));
    };
    let engine = gantry_docker::Engine::connect(None).await?;
    // Staged next to the workspace (same file system), removed whatever happens.
    let staging = tempfile::Builder::new()
        .prefix(".gantry-image-")
        .tempdir_in(&ctx.work_dir)
        .with_context(|| format!("staging the image in {}", ctx.work_dir.display()))?;
    let info = engine.save(image, staging.path()).await?;
    let stored = ctx
        .artifacts
        .store(
            staging.path(),
            &[
                gantry_docker::ARCHIVE.to_string(),
                gantry_docker::DESCRIPTION.to_string(),
            ],
        )
        .await?;
    let repo = gantry_model::image_repository(image);
    let short: String = ctx.commit.chars().take(12).collect();
    for tag in [format!("run-{}", ctx.run_id), short] {
        if let Err(e) = engine.tag(&info.id, repo, &tag).await {
            tracing::warn!(error = %format!("{e:#}"), "tagging the run's image");
        }
    }
    Ok((stored, Some(info.id)))
}

/// Tags the stored image `run-N` and with the commit in the push's repository and pushes both,
/// logged in with the push's secret when it names one.
pub(crate) async fn push_image(
    ctx: &RunContext,
    image: &str,
    push: &gantry_model::ImagePush,
    mut emit: Emit,
) -> anyhow::Result<()> {
    let password = match &push.password_secret {
        Some(name) => match ctx.secrets.get(name) {
            Some(v) => Some(v.expose().to_string()),
            None => anyhow::bail!("the registry password secret `{name}` is not set"),
        },
        None => None,
    };
    let login = push.username.as_deref().zip(password.as_deref());
    let engine = gantry_docker::Engine::connect(None).await?;
    let short: String = ctx.commit.chars().take(12).collect();
    for tag in [format!("run-{}", ctx.run_id), short] {
        let reference = format!("{}:{tag}", push.repository);
        emit(Stream::System, format!("gantry: pushing {reference}"));
        engine.tag(image, &push.repository, &tag).await?;
        let digest = engine
            .push(&push.repository, &tag, login, |l| emit(Stream::Stdout, l))
            .await?;
        let digest = digest.map(|d| format!(" as {d}")).unwrap_or_default();
        emit(
            Stream::System,
            format!("gantry: pushed {reference}{digest}"),
        );
    }
    Ok(())
}

/// The context as a tar archive (symlinks kept as links), sent to the engine's build.
pub(crate) async fn build_with(
    project_dir: &Path,
    build: &gantry_model::ImageBuild,
    tag: &str,
    mut emit: impl FnMut(Stream, String) + Send,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let context = project_dir.join(&build.context);
    let file = project_dir.join(&build.file);
    let Ok(inside) = file.strip_prefix(&context) else {
        anyhow::bail!(
            "the Dockerfile {} is not inside the build context {}",
            build.file,
            build.context
        );
    };
    if !file.is_file() {
        anyhow::bail!(
            "the Dockerfile {} does not exist in the job's directory",
            build.file
        );
    }
    let dockerfile = inside.to_string_lossy().into_owned();
    let dir = context.clone();
    let archive = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &dir)
            .with_context(|| format!("packing the build context {}", dir.display()))?;
        Ok(b.into_inner()?)
    })
    .await??;
    emit(
        Stream::System,
        format!(
            "gantry: building {tag} from {} (context {}, {} KiB)",
            build.file,
            build.context,
            archive.len() / 1024
        ),
    );
    let engine = gantry_docker::Engine::connect(None).await?;
    engine
        .build(archive, &dockerfile, tag, |l| emit(Stream::Stdout, l))
        .await
        .map(|_| ())
}
