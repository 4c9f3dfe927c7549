//! The one descriptor-set layout, pipeline layout and compute pipeline per
//! [`Program`] that every call reuses. Created once when the engine starts.

use ash::vk;
use shared_state::EngineError;

use crate::shaders::{PARAMS_BYTES, Program};

/// Storage buffers bound to every dispatch: two inputs (0, 1) and the
/// output (2). Shaders that take one input simply do not read binding 1.
pub const BINDINGS: u32 = 3;

/// Layouts and pipelines. Handles are null until created, so a partly
/// built set can be destroyed (destroying a null handle is a no-op).
#[derive(Default)]
pub struct Pipelines {
    pub set_layout: vk::DescriptorSetLayout,
    pub layout: vk::PipelineLayout,
    pub pipelines: Vec<vk::Pipeline>,
}

impl Pipelines {
    /// Builds every pipeline from the embedded SPIR-V. On error, what was
    /// created so far is left in `self` for [`Pipelines::destroy`].
    pub fn create(&mut self, device: &ash::Device) -> Result<(), EngineError> {
        let fail = |what: &str, e: vk::Result| {
            EngineError::internal(format!("Vulkan: {what} failed: {e:?}"))
        };
        let bindings: Vec<_> = (0..BINDINGS)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: `device` is live; the create info and its bindings outlive
        // the call. The layout is destroyed in `destroy`.
        self.set_layout = unsafe { device.create_descriptor_set_layout(&set_info, None) }
            .map_err(|e| fail("vkCreateDescriptorSetLayout", e))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(PARAMS_BYTES as u32)];
        let set_layouts = [self.set_layout];
        let layout_info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&set_layouts)
            .push_constant_ranges(&ranges);
        // SAFETY: as above; `set_layout` is a live layout of this device.
        self.layout = unsafe { device.create_pipeline_layout(&layout_info, None) }
            .map_err(|e| fail("vkCreatePipelineLayout", e))?;

        for program in Program::ALL {
            let words = program.words();
            let module_info = vk::ShaderModuleCreateInfo::default().code(&words);
            // SAFETY: `words` is SPIR-V produced and validated by naga at
            // build time; the module is destroyed right after pipeline
            // creation, which does not need it afterwards.
            let module = unsafe { device.create_shader_module(&module_info, None) }
                .map_err(|e| fail(&format!("vkCreateShaderModule ({})", program.shader()), e))?;
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(program.entry_point());
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(self.layout)];
            // SAFETY: `module` and `layout` are live objects of `device`;
            // the entry point exists in the module (checked by a test).
            let created =
                unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &info, None) };
            // SAFETY: no pipeline creation is using the module any more.
            unsafe { device.destroy_shader_module(module, None) };
            let pipeline = created.map_err(|(_, e)| {
                fail(
                    &format!(
                        "vkCreateComputePipelines ({} {:?})",
                        program.shader(),
                        program.entry_point()
                    ),
                    e,
                )
            })?;
            self.pipelines.extend(pipeline);
        }
        Ok(())
    }

    pub fn get(&self, program: Program) -> vk::Pipeline {
        self.pipelines[program.index()]
    }

    /// Destroys pipelines, then layouts. The device must be idle.
    pub fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: the caller waited for the device to be idle, so no command
        // buffer using these objects is pending; each handle is destroyed
        // once (the fields are cleared) and null handles are ignored.
        unsafe {
            for pipeline in self.pipelines.drain(..) {
                device.destroy_pipeline(pipeline, None);
            }
            device.destroy_pipeline_layout(std::mem::take(&mut self.layout), None);
            device.destroy_descriptor_set_layout(std::mem::take(&mut self.set_layout), None);
        }
    }
}
