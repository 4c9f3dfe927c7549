//! One descriptor-set layout, pipeline layout and compute pipeline per pass
//! of each kernel the engine implements, built from the compiled shaders
//! when the engine is created.

use std::time::{Duration, Instant};

use ash::vk;
use shared_state::{EngineError, KernelDecl};

use crate::convention::Layout;
use crate::shaders::Shader;

/// A kernel's layouts and pipelines. Handles are null until created, so a
/// partly built one can be destroyed (destroying a null handle is a no-op).
#[derive(Default)]
pub struct KernelPipelines {
    pub set_layout: vk::DescriptorSetLayout,
    pub layout: vk::PipelineLayout,
    /// One per declared pass, in order.
    pub passes: Vec<vk::Pipeline>,
    /// Storage bindings (the uniform block is the next binding).
    pub storage_bindings: u32,
    /// Pipeline creation time.
    pub elapsed: Duration,
}

impl KernelPipelines {
    /// Builds the kernel's pipelines from its shader. On error, what was
    /// created so far is left in `self` for [`KernelPipelines::destroy`].
    pub fn create(
        &mut self,
        device: &ash::Device,
        decl: &KernelDecl,
        shader: &Shader,
        cache: vk::PipelineCache,
    ) -> Result<(), EngineError> {
        let start = Instant::now();
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} ({}) failed: {e:?}", shader.path))
        };
        let layout: &Layout = &shader.layout;
        self.storage_bindings = layout.storage.len() as u32;
        let bindings: Vec<_> = (0..=self.storage_bindings)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(if b < self.storage_bindings {
                        vk::DescriptorType::STORAGE_BUFFER
                    } else {
                        vk::DescriptorType::UNIFORM_BUFFER
                    })
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: `device` is live; the create info and its bindings outlive
        // the call. The layout is destroyed in `destroy`.
        self.set_layout = unsafe { device.create_descriptor_set_layout(&set_info, None) }
            .map_err(|e| fail("vkCreateDescriptorSetLayout", e))?;
        let set_layouts = [self.set_layout];
        let layout_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
        // SAFETY: as above; `set_layout` is a live layout of this device.
        self.layout = unsafe { device.create_pipeline_layout(&layout_info, None) }
            .map_err(|e| fail("vkCreatePipelineLayout", e))?;

        let module_info = vk::ShaderModuleCreateInfo::default().code(&shader.words);
        // SAFETY: the words are SPIR-V written by naga from a module it
        // validated; the module is destroyed below, after the pipelines are
        // created (which do not need it afterwards).
        let module = unsafe { device.create_shader_module(&module_info, None) }
            .map_err(|e| fail("vkCreateShaderModule", e))?;
        let mut result = Ok(());
        for pass in &decl.launch.passes {
            let entry = match std::ffi::CString::new(pass.entry.as_str()) {
                Ok(c) => c,
                Err(_) => {
                    result = Err(EngineError::bad_call(format!(
                        "{}: entry point {:?} contains a NUL byte",
                        decl.file, pass.entry
                    )));
                    break;
                }
            };
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&entry);
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(self.layout)];
            // SAFETY: `module` and `layout` are live objects of `device`; the
            // entry point exists in the module with this workgroup size and
            // its bindings fit the layout (checked by `shaders::compile`);
            // `cache` is a live cache of `device` used by this thread only.
            let created = unsafe { device.create_compute_pipelines(cache, &info, None) };
            match created {
                Ok(p) => self.passes.extend(p),
                Err((_, e)) => {
                    result = Err(fail(
                        &format!("vkCreateComputePipelines (entry {})", pass.entry),
                        e,
                    ));
                    break;
                }
            }
        }
        // SAFETY: no pipeline creation is using the module any more.
        unsafe { device.destroy_shader_module(module, None) };
        self.elapsed = start.elapsed();
        result
    }

    /// Destroys pipelines, then layouts. The device must be idle.
    pub fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: the caller waited for the device to be idle, so no command
        // buffer using these objects is pending; each handle is destroyed
        // once (the fields are cleared) and null handles are ignored.
        unsafe {
            for pipeline in self.passes.drain(..) {
                device.destroy_pipeline(pipeline, None);
            }
            device.destroy_pipeline_layout(std::mem::take(&mut self.layout), None);
            device.destroy_descriptor_set_layout(std::mem::take(&mut self.set_layout), None);
        }
    }
}
